//! The Cognito user-pool calls the dashboard makes, through `aws-sdk-cognitoidentityprovider`,
//! with the app client that has no secret (`USER_PASSWORD_AUTH`: the password travels over TLS
//! to Cognito, never to our storage).
//!
//! Every failure becomes an [`IdentityError`]: what the person can act on (wrong code, weak
//! password, too many attempts) is told plainly; everything about *whether an account exists*
//! collapses into [`IdentityError::NotAuthorized`], one generic message.

use aws_sdk_cognitoidentityprovider::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cognitoidentityprovider::types::{AttributeType, AuthFlowType};
use aws_sdk_cognitoidentityprovider::Client;
use std::fmt;

/// What can go wrong talking to the user pool, in the terms a person needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Wrong email or password, unknown user, disabled user: always the same answer.
    #[error("Incorrect email or password.")]
    NotAuthorized,
    #[error("Please verify your email address first.")]
    NotConfirmed,
    #[error("An account with this email already exists. Log in, or reset your password.")]
    AlreadyExists,
    /// The pool's password policy, with Cognito's explanation.
    #[error("{0}")]
    InvalidPassword(String),
    #[error("The code is not correct. Check the email we sent and try again.")]
    CodeMismatch,
    #[error("The code has expired. Ask for a new one.")]
    CodeExpired,
    /// Throttling, attempt limits and lock-outs.
    #[error("Too many attempts. Please wait a few minutes and try again.")]
    TooManyAttempts,
    /// A field Cognito refused (e.g. a malformed email), with its explanation.
    #[error("{0}")]
    InvalidInput(String),
    /// The pool asked for a step this dashboard does not offer (MFA, a forced new password).
    #[error(
        "This sign-in needs a step the dashboard does not support yet; please contact support."
    )]
    Unsupported(String),
    #[error("Something went wrong on our side. Please try again.")]
    Internal(String),
}

/// What a successful sign-in (or refresh) returns.
#[derive(Clone)]
pub struct Tokens {
    pub id_token: String,
    pub access_token: String,
    /// Only on sign-in; a refresh keeps the one it was given.
    pub refresh_token: Option<String>,
    /// Seconds the access and ID tokens are valid.
    pub expires_in: i64,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tokens(…)")
    }
}

/// Maps a Cognito failure to what the person is told.
fn classify<E, R>(e: SdkError<E, R>) -> IdentityError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let service = e.as_service_error();
    match service.and_then(|s| s.code()) {
        Some(code) => by_code(code, service.and_then(|s| s.message()).unwrap_or("")),
        None => IdentityError::Internal(
            aws_sdk_cognitoidentityprovider::error::DisplayErrorContext(e).to_string(),
        ),
    }
}

/// Cognito's error `code` (and `message`) in the person's terms.
fn by_code(code: &str, message: &str) -> IdentityError {
    match code {
        // Cognito says "Password attempts exceeded" with this code when it locks a user out.
        "NotAuthorizedException" if message.contains("attempts exceeded") => {
            IdentityError::TooManyAttempts
        }
        "NotAuthorizedException" | "UserNotFoundException" => IdentityError::NotAuthorized,
        "UserNotConfirmedException" => IdentityError::NotConfirmed,
        "UsernameExistsException" | "AliasExistsException" => IdentityError::AlreadyExists,
        "InvalidPasswordException" => IdentityError::InvalidPassword(password_message(message)),
        "CodeMismatchException" => IdentityError::CodeMismatch,
        "ExpiredCodeException" => IdentityError::CodeExpired,
        "TooManyRequestsException"
        | "LimitExceededException"
        | "TooManyFailedAttemptsException" => IdentityError::TooManyAttempts,
        "InvalidParameterException" => IdentityError::InvalidInput(message.to_string()),
        other => IdentityError::Internal(format!("{other}: {message}")),
    }
}

/// Cognito's password message ("Password did not conform with policy: Password must have
/// uppercase characters"), or ours when it gives none (moto does not).
fn password_message(message: &str) -> String {
    let policy = message
        .split_once(':')
        .map(|(_, why)| why.trim())
        .filter(|why| !why.is_empty());
    match policy {
        Some(why) => format!("{why}. {PASSWORD_RULES}"),
        None => PASSWORD_RULES.to_string(),
    }
}

/// The pool's policy in words (template.yaml `UserPool.Policies.PasswordPolicy`).
pub const PASSWORD_RULES: &str =
    "Passwords need at least 8 characters, with an upper-case letter, a lower-case letter and a digit.";

/// The user pool through its app client.
#[derive(Clone, Debug)]
pub struct Cognito {
    client: Client,
    client_id: String,
}

impl Cognito {
    /// A client of the pool from the process's AWS configuration (`AWS_ENDPOINT_URL`: moto).
    pub fn from_sdk(sdk: &aws_config::SdkConfig, client_id: impl Into<String>) -> Cognito {
        Cognito::new(Client::new(sdk), client_id)
    }

    pub fn new(client: Client, client_id: impl Into<String>) -> Cognito {
        Cognito {
            client,
            client_id: client_id.into(),
        }
    }

    /// Creates an unconfirmed user; Cognito emails the verification code.
    pub async fn sign_up(&self, email: &str, password: &str) -> Result<(), IdentityError> {
        let email_attribute = AttributeType::builder()
            .name("email")
            .value(email)
            .build()
            .map_err(|e| IdentityError::Internal(e.to_string()))?;
        self.client
            .sign_up()
            .client_id(&self.client_id)
            .username(email)
            .password(password)
            .user_attributes(email_attribute)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub async fn confirm_sign_up(&self, email: &str, code: &str) -> Result<(), IdentityError> {
        self.client
            .confirm_sign_up()
            .client_id(&self.client_id)
            .username(email)
            .confirmation_code(code)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    pub async fn resend_code(&self, email: &str) -> Result<(), IdentityError> {
        self.client
            .resend_confirmation_code()
            .client_id(&self.client_id)
            .username(email)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// `USER_PASSWORD_AUTH`. A challenge (MFA, new password) is [`IdentityError::Unsupported`].
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<Tokens, IdentityError> {
        let out = self
            .client
            .initiate_auth()
            .client_id(&self.client_id)
            .auth_flow(AuthFlowType::UserPasswordAuth)
            .auth_parameters("USERNAME", email)
            .auth_parameters("PASSWORD", password)
            .send()
            .await
            .map_err(classify)?;
        if let Some(challenge) = out.challenge_name() {
            return Err(IdentityError::Unsupported(challenge.as_str().to_string()));
        }
        tokens_of(out.authentication_result)
    }

    /// New ID and access tokens from a refresh token (which a global sign-out revokes).
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, IdentityError> {
        let out = self
            .client
            .initiate_auth()
            .client_id(&self.client_id)
            .auth_flow(AuthFlowType::RefreshTokenAuth)
            .auth_parameters("REFRESH_TOKEN", refresh_token)
            .send()
            .await
            .map_err(classify)?;
        tokens_of(out.authentication_result)
    }

    /// Revokes every refresh token of the person (all their browsers).
    pub async fn global_sign_out(&self, access_token: &str) -> Result<(), IdentityError> {
        self.client
            .global_sign_out()
            .access_token(access_token)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Emails a reset code. For an unknown email Cognito (with prevent-user-existence errors)
    /// answers as if it had sent one; so do we.
    pub async fn forgot_password(&self, email: &str) -> Result<(), IdentityError> {
        match self
            .client
            .forgot_password()
            .client_id(&self.client_id)
            .username(email)
            .send()
            .await
            .map_err(classify)
        {
            Ok(_) | Err(IdentityError::NotAuthorized) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn confirm_forgot_password(
        &self,
        email: &str,
        code: &str,
        new_password: &str,
    ) -> Result<(), IdentityError> {
        self.client
            .confirm_forgot_password()
            .client_id(&self.client_id)
            .username(email)
            .confirmation_code(code)
            .password(new_password)
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}

fn tokens_of(
    result: Option<aws_sdk_cognitoidentityprovider::types::AuthenticationResultType>,
) -> Result<Tokens, IdentityError> {
    let result =
        result.ok_or_else(|| IdentityError::Internal("no authentication result".into()))?;
    match (result.id_token, result.access_token) {
        (Some(id_token), Some(access_token)) => Ok(Tokens {
            id_token,
            access_token,
            refresh_token: result.refresh_token,
            expires_in: i64::from(result.expires_in).max(60),
        }),
        _ => Err(IdentityError::Internal(
            "the authentication result lacks a token".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cognito_errors_become_what_the_person_can_act_on() {
        // Wrong password and unknown user: one answer, so nobody learns who has an account.
        assert_eq!(
            by_code("NotAuthorizedException", "Incorrect username or password."),
            IdentityError::NotAuthorized
        );
        assert_eq!(
            by_code("UserNotFoundException", "User does not exist."),
            IdentityError::NotAuthorized
        );
        // Lock-out and throttling: say so, plainly.
        for (code, message) in [
            ("NotAuthorizedException", "Password attempts exceeded"),
            ("TooManyRequestsException", "Rate exceeded"),
            (
                "LimitExceededException",
                "Attempt limit exceeded, please try after some time.",
            ),
            ("TooManyFailedAttemptsException", ""),
        ] {
            assert_eq!(
                by_code(code, message),
                IdentityError::TooManyAttempts,
                "{code}"
            );
        }
        assert_eq!(
            IdentityError::TooManyAttempts.to_string(),
            "Too many attempts. Please wait a few minutes and try again."
        );
        assert_eq!(
            by_code("CodeMismatchException", ""),
            IdentityError::CodeMismatch
        );
        assert_eq!(
            by_code("ExpiredCodeException", ""),
            IdentityError::CodeExpired
        );
        assert_eq!(
            by_code("UserNotConfirmedException", ""),
            IdentityError::NotConfirmed
        );
        assert!(matches!(
            by_code("InternalErrorException", "boom"),
            IdentityError::Internal(_)
        ));
    }

    #[test]
    fn password_messages_keep_cognitos_reason() {
        assert_eq!(password_message(""), PASSWORD_RULES);
        assert_eq!(
            password_message("Password did not conform with policy: Password not long enough"),
            format!("Password not long enough. {PASSWORD_RULES}")
        );
    }
}
