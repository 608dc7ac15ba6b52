//! An event handler taking extractors, with patterns, returning `()` or `Result<(), E>`.
use herald::{async_handler, Bus, Event, Meta, State};
use serde::{Deserialize, Serialize};

#[derive(Event, Clone, Debug, Serialize, Deserialize)]
#[event(name = "user.signed_up")]
struct UserSignedUp {
    email: String,
}

#[derive(Clone)]
struct Mailer;

#[derive(Debug)]
struct MailError;

impl std::fmt::Display for MailError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mail error")
    }
}

impl std::error::Error for MailError {}

#[async_handler]
async fn send_verification(event: UserSignedUp, State(_mailer): State<Mailer>, meta: Meta) {
    println!("mail {} ({})", event.email, meta.attempt());
}

#[async_handler]
async fn audit(UserSignedUp { email }: UserSignedUp, _bus: Bus) -> Result<(), MailError> {
    if email.is_empty() {
        return Err(MailError);
    }
    Ok(())
}

mod nested {
    #[herald::async_handler(name = "nested.welcome")]
    pub(crate) async fn welcome(_event: super::UserSignedUp, mailer: herald::State<super::Mailer>) {
        let herald::State(_mailer) = mailer;
    }
}

fn main() {
    // The extractors' state types are listed for `build()` to check.
    let descriptor = herald::__private::inventory::iter::<herald::__private::HandlerDescriptor>
        .into_iter()
        .find(|descriptor| descriptor.name.ends_with("::send_verification"))
        .expect("registered handler");
    let requirements = (descriptor.requirements)();
    assert_eq!(requirements.len(), 1);
    assert!(
        requirements[0].type_name.ends_with("Mailer"),
        "{requirements:?}"
    );

    // The handler stays a plain function, callable from unit tests.
    let _future = send_verification;
    let _nested = nested::welcome;
}
