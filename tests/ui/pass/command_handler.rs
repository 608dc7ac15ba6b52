//! Command handlers return the reply, or `Result<Reply, E>`.
use herald::{async_handler, Command, HandlerError};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PointsGranted {
    total: u32,
}

#[derive(Command, Clone, Debug, Serialize, Deserialize)]
#[command(name = "points.grant", reply = PointsGranted, key = user_id)]
struct GrantPoints {
    user_id: u64,
    points: u32,
}

#[async_handler]
async fn grant_points(command: GrantPoints) -> Result<PointsGranted, HandlerError> {
    Ok(PointsGranted {
        total: command.points,
    })
}

#[derive(Command, Clone, Debug, Serialize, Deserialize)]
#[command(reply = u64)]
struct CountUsers;

#[async_handler]
async fn count_users(_command: CountUsers) -> u64 {
    42
}

#[derive(Command, Clone, Debug, Serialize, Deserialize)]
struct ResetCache;

#[async_handler]
async fn reset_cache(_command: ResetCache) {}

fn main() {}
