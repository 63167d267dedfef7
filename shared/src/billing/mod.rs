//! Buying credits with Stripe Checkout (issue 11).
//!
//! - [`Billing::start_checkout`]: what the dashboard's Add Credits calls. It creates a Checkout
//!   Session (`mode=payment`, one line item of the amount in USD, the account as
//!   `client_reference_id` and in the metadata of the session and its payment intent, success
//!   and cancel URLs back to the dashboard) and answers its `url` to redirect to. Nothing is
//!   credited here, nor on the success redirect: only the webhook adds credits.
//! - [`signature`]: verifying `Stripe-Signature` on `POST /billing/stripe-webhook`.
//! - [`events`]: the events the webhook acts on; the money moves in
//!   [`crate::store::payments`], exactly once per event and per session.
//!
//! 1 credit = 1 USD (`crate::money`): a purchase of 25 credits is a 2500-cent payment.

pub mod events;
pub mod signature;
pub mod stripe;

use crate::aws::AwsClients;
use crate::error::ApiError;
use crate::money::Micros;
use std::time::Duration;
pub use stripe::{CheckoutStart, StripeClient, StripeKeys};

/// Where Stripe is and how to reach it (environment, like [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct BillingConfig {
    /// Secrets Manager id of the Stripe keys (`STRIPE_SECRET_ID`), see [`StripeKeys`].
    pub stripe_secret_id: String,
    /// `https://api.stripe.com`, or the fake locally (`STRIPE_API_BASE`).
    pub stripe_api_base: String,
    pub stripe_timeout: Duration,
    /// Where Stripe sends the customer after paying (`CHECKOUT_SUCCESS_URL`); Stripe replaces
    /// `{CHECKOUT_SESSION_ID}` in it.
    pub success_url: String,
    /// … and after cancelling (`CHECKOUT_CANCEL_URL`).
    pub cancel_url: String,
}

impl BillingConfig {
    pub fn from_env() -> BillingConfig {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        // The dashboard's origin (where the person is signed in), else the API's.
        let public = var("DASHBOARD_URL")
            .or_else(|| var("PUBLIC_BASE_URL"))
            .unwrap_or_else(|| "http://127.0.0.1:3000".into());
        let public = public.trim_end_matches('/');
        BillingConfig {
            stripe_secret_id: var("STRIPE_SECRET_ID").unwrap_or_else(|| "mimiry/stripe".into()),
            stripe_api_base: var("STRIPE_API_BASE")
                .unwrap_or_else(|| "https://api.stripe.com".into()),
            stripe_timeout: Duration::from_millis(
                var("STRIPE_TIMEOUT_MS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(10_000),
            ),
            success_url: var("CHECKOUT_SUCCESS_URL").unwrap_or_else(|| {
                format!("{public}/dashboard/credits/success?session_id={{CHECKOUT_SESSION_ID}}")
            }),
            cancel_url: var("CHECKOUT_CANCEL_URL")
                .unwrap_or_else(|| format!("{public}/dashboard/credits?checkout=cancelled")),
        }
    }
}

/// An amount of credits one purchase may buy: 5.00 to 1000.00, in whole cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurchaseAmount(Micros);

impl PurchaseAmount {
    pub const MIN: Micros = Micros(5_000_000);
    pub const MAX: Micros = Micros(1_000_000_000);
    /// The amounts the dashboard offers as buttons (besides a custom one).
    pub const PRESETS: [Micros; 4] = [
        Micros(10_000_000),
        Micros(25_000_000),
        Micros(50_000_000),
        Micros(100_000_000),
    ];

    pub fn new(amount: Micros) -> Result<PurchaseAmount, ApiError> {
        if amount < Self::MIN || amount > Self::MAX {
            return Err(ApiError::validation(
                "amount",
                format!(
                    "The amount must be from {} to {} credits",
                    Self::MIN,
                    Self::MAX
                ),
            ));
        }
        if amount.0 % 10_000 != 0 {
            return Err(ApiError::validation(
                "amount",
                "The amount must be in whole cents (at most 2 decimal places)",
            ));
        }
        Ok(PurchaseAmount(amount))
    }

    /// Parses a decimal string such as `"25"` or `"12.50"` (a form field).
    pub fn parse(s: &str) -> Result<PurchaseAmount, ApiError> {
        let micros = Micros::parse_decimal(s).map_err(|e| ApiError::validation("amount", e))?;
        PurchaseAmount::new(micros)
    }

    pub fn micros(self) -> Micros {
        self.0
    }

    /// US cents, what Stripe's `unit_amount` takes.
    pub fn cents(self) -> i64 {
        self.0 .0 / 10_000
    }
}

/// Checkout for the dashboard: built once per container.
pub struct Billing {
    pub stripe: StripeClient,
    pub config: BillingConfig,
}

impl Billing {
    pub fn new(clients: &AwsClients, config: BillingConfig) -> Billing {
        Billing {
            stripe: StripeClient::new(
                clients.secrets.clone(),
                config.stripe_secret_id.clone(),
                config.stripe_api_base.clone(),
                config.stripe_timeout,
            ),
            config,
        }
    }

    /// The Checkout Session's parameters for `account_id` buying `amount`.
    pub fn session_params(
        &self,
        account_id: &str,
        amount: PurchaseAmount,
    ) -> Vec<(String, String)> {
        let p = |k: &str, v: String| (k.to_string(), v);
        vec![
            p("mode", "payment".into()),
            p("client_reference_id", account_id.into()),
            p(
                &format!("metadata[{}]", events::ACCOUNT_METADATA_KEY),
                account_id.into(),
            ),
            p("metadata[credits]", amount.micros().to_string()),
            p(
                &format!(
                    "payment_intent_data[metadata][{}]",
                    events::ACCOUNT_METADATA_KEY
                ),
                account_id.into(),
            ),
            p("line_items[0][price_data][currency]", "usd".into()),
            p(
                "line_items[0][price_data][unit_amount]",
                amount.cents().to_string(),
            ),
            p(
                "line_items[0][price_data][product_data][name]",
                format!("{} Mimiry credits", amount.micros()),
            ),
            p("line_items[0][quantity]", "1".into()),
            p("success_url", self.config.success_url.clone()),
            p("cancel_url", self.config.cancel_url.clone()),
        ]
    }

    /// Starts a purchase: creates the Checkout Session and answers where to redirect.
    /// Each call is a new purchase (its own idempotency key, reused across our retries).
    pub async fn start_checkout(
        &self,
        account_id: &str,
        amount: PurchaseAmount,
    ) -> Result<CheckoutStart, ApiError> {
        let key = format!("checkout-{account_id}-{}", uuid::Uuid::new_v4());
        self.stripe
            .create_checkout_session(&self.session_params(account_id, amount), &key)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purchase_amounts_are_bounded_and_in_cents() {
        assert_eq!(PurchaseAmount::parse("25").unwrap().cents(), 2500);
        assert_eq!(PurchaseAmount::parse("12.34").unwrap().cents(), 1234);
        assert_eq!(
            PurchaseAmount::parse("5").unwrap().micros(),
            PurchaseAmount::MIN
        );
        assert_eq!(
            PurchaseAmount::parse("1000.00").unwrap().micros(),
            PurchaseAmount::MAX
        );
        for bad in ["4.99", "1000.01", "0", "-5", "12.345", "abc", ""] {
            assert!(PurchaseAmount::parse(bad).is_err(), "{bad}");
        }
        for preset in PurchaseAmount::PRESETS {
            assert!(PurchaseAmount::new(preset).is_ok());
        }
    }
}
