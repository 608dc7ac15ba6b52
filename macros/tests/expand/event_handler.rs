use herald::{async_handler, Meta, State};

// An event handler with extractors and no options: every option takes its default.
#[async_handler]
pub async fn send_receipt(event: OrderPlaced, State(mailer): State<Mailer>, meta: Meta) {
    mailer.send(event.email, meta.id()).await;
}
