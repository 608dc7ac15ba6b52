use herald::Event;
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
struct Changed<T> {
    value: T,
}

fn main() {}
