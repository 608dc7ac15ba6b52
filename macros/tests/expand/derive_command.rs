use herald::Command;
use serde::{Deserialize, Serialize};

#[derive(Command, Clone, Debug, Serialize, Deserialize)]
#[command(name = "points.grant", reply = PointsGranted)]
pub struct GrantPoints {
    pub user_id: u64,
    pub points: u32,
}

// No reply: the handler returns `()`.
#[derive(Command, Clone, Debug, Serialize, Deserialize)]
#[command(key = user_id)]
pub struct ResetPoints {
    pub user_id: u64,
}
