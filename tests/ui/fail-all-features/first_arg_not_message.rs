use herald::async_handler;

struct OrderPlaced {
    order_id: u64,
}

#[async_handler]
async fn send_receipt(event: OrderPlaced) {
    let _ = event.order_id;
}

fn main() {}
