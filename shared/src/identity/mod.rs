//! People, as opposed to API keys: Amazon Cognito owns passwords, email verification and
//! resets ([`cognito`]); we check the tokens it issues ([`tokens`]) and map a person (the
//! token's `sub`) to a Mimiry account (`store::users`).

pub mod cognito;
pub mod tokens;

pub use cognito::{Cognito, IdentityError, Tokens};
pub use tokens::{Person, TokenVerifier};
