use herald::{async_handler, Command};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct PointsGranted {
    total: u32,
}

#[derive(Command, Clone, Debug, Serialize, Deserialize)]
#[command(reply = PointsGranted)]
struct GrantPoints {
    points: u32,
}

#[async_handler]
async fn grant_points(command: GrantPoints) -> u32 {
    command.points
}

fn main() {}
