//! Creates the emulated AWS resources (moto locally) exactly as template.yaml declares them:
//! the table's keys and index, the jobs queue's visibility timeout and redrive policy, the
//! secrets, and the Cognito user pool with its app client. Safe to run again: what exists is
//! left as it is.

use crate::template::Template;
use anyhow::{anyhow, Context, Result};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use mimiry_shared::aws::AwsClients;
use serde_yaml::Value;

/// Names of what the local stack creates; in AWS, CloudFormation names them.
#[derive(Debug, Clone)]
pub struct Names {
    pub table: String,
    pub queue: String,
    pub dead_letter_queue: String,
    pub provider_secret: String,
    /// Lambda Cloud's `{"api_key": …}` (one secret per provider).
    pub lambda_secret: String,
    pub report_secret: String,
    pub stripe_secret: String,
    pub session_secret: String,
    /// The sender of email notices (`NOTICE_FROM_EMAIL`), verified in SES.
    pub notice_from: Option<String>,
}

pub struct Created {
    pub queue_url: String,
    pub dead_letter_queue_url: String,
    pub identity: Identity,
}

fn key_schema(v: &Value) -> Result<Vec<KeySchemaElement>> {
    v.as_sequence()
        .ok_or_else(|| anyhow!("KeySchema is not a list"))?
        .iter()
        .map(|k| {
            let name = k
                .get("AttributeName")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("KeySchema entry without AttributeName"))?;
            let kind = k
                .get("KeyType")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("KeySchema entry without KeyType"))?;
            Ok(KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(KeyType::from(kind))
                .build()?)
        })
        .collect()
}

async fn create_table(clients: &AwsClients, template: &Template, name: &str) -> Result<()> {
    let props = template.properties("Table")?;
    let mut request = clients
        .dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&props["KeySchema"])?));
    for attr in props["AttributeDefinitions"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attr["AttributeName"].as_str().unwrap_or_default())
                .attribute_type(ScalarAttributeType::from(
                    attr["AttributeType"].as_str().unwrap_or("S"),
                ))
                .build()?,
        );
    }
    for gsi in props["GlobalSecondaryIndexes"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        let projection = gsi["Projection"]["ProjectionType"]
            .as_str()
            .unwrap_or("ALL");
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(gsi["IndexName"].as_str().unwrap_or_default())
                .set_key_schema(Some(key_schema(&gsi["KeySchema"])?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(projection))
                        .build(),
                )
                .build()?,
        );
    }
    match request.send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            return Ok(())
        }
        Err(e) => {
            return Err(anyhow!(aws_sdk_dynamodb::error::DisplayErrorContext(e)))
                .context("creating the table")
        }
    }
    if let Some(ttl) = props["TimeToLiveSpecification"]["AttributeName"].as_str() {
        clients
            .dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(ttl)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await
            .map_err(|e| anyhow!(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    }
    Ok(())
}

async fn create_queue(
    clients: &AwsClients,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> Result<String> {
    let mut request = clients.sqs.create_queue().queue_name(name);
    for (k, v) in attributes {
        request = request.attributes(k, v);
    }
    let out = request
        .send()
        .await
        .map_err(|e| anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e)))
        .with_context(|| format!("creating queue {name}"))?;
    out.queue_url
        .ok_or_else(|| anyhow!("no URL for queue {name}"))
}

async fn queue_arn(clients: &AwsClients, url: &str) -> Result<String> {
    let out = clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| anyhow!(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
    out.attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| anyhow!("queue {url} has no ARN"))
}

async fn ensure_secret(clients: &AwsClients, id: &str, value: &str) -> Result<()> {
    let exists = clients
        .secrets
        .describe_secret()
        .secret_id(id)
        .send()
        .await
        .is_ok();
    if exists {
        clients
            .secrets
            .put_secret_value()
            .secret_id(id)
            .secret_string(value)
            .send()
            .await
            .map_err(|e| anyhow!(aws_sdk_secretsmanager::error::DisplayErrorContext(e)))?;
    } else {
        clients
            .secrets
            .create_secret()
            .name(id)
            .secret_string(value)
            .send()
            .await
            .map_err(|e| anyhow!(aws_sdk_secretsmanager::error::DisplayErrorContext(e)))
            .with_context(|| format!("creating secret {id}"))?;
    }
    Ok(())
}

/// The alias of the KMS key sealing account secrets: `SECRETS_KMS_KEY_ID`'s default, and the
/// alias template.yaml gives the key in AWS.
const SECRETS_KEY_ALIAS: &str = "alias/mimiry-secrets";

/// A symmetric KMS key under `alias` (moto's KMS locally), made once.
async fn ensure_secrets_key(clients: &AwsClients, alias: &str) -> Result<()> {
    let aliases = clients
        .kms
        .list_aliases()
        .send()
        .await
        .map_err(|e| anyhow!("KMS ListAliases: {e:?}"))?;
    if aliases
        .aliases()
        .iter()
        .any(|a| a.alias_name() == Some(alias))
    {
        return Ok(());
    }
    let key = clients
        .kms
        .create_key()
        .description("Mimiry account secrets (envelope encryption)")
        .send()
        .await
        .map_err(|e| anyhow!("KMS CreateKey: {e:?}"))?;
    let key_id = key
        .key_metadata()
        .map(|m| m.key_id().to_string())
        .ok_or_else(|| anyhow!("KMS CreateKey answered no key id"))?;
    clients
        .kms
        .create_alias()
        .alias_name(alias)
        .target_key_id(key_id)
        .send()
        .await
        .map_err(|e| anyhow!("KMS CreateAlias: {e:?}"))?;
    Ok(())
}

fn number(v: &Value, what: &str) -> Result<String> {
    match v {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        _ => Err(anyhow!("template.yaml: {what} is not a number")),
    }
}

/// Creates everything; `provider_credentials`, `lambda_credentials` and `stripe_keys` are the
/// JSON the provider and Stripe secrets hold.
pub async fn bootstrap(
    clients: &AwsClients,
    template: &Template,
    names: &Names,
    provider_credentials: &str,
    lambda_credentials: &str,
    report_signing_key: &str,
    stripe_keys: &str,
) -> Result<Created> {
    create_table(clients, template, &names.table).await?;

    let dlq_props = template.properties("JobsDeadLetterQueue")?;
    let dead_letter_queue_url = create_queue(
        clients,
        &names.dead_letter_queue,
        vec![(
            QueueAttributeName::MessageRetentionPeriod,
            number(&dlq_props["MessageRetentionPeriod"], "DLQ retention")?,
        )],
    )
    .await?;
    let dlq_arn = queue_arn(clients, &dead_letter_queue_url).await?;

    let props = template.properties("JobsQueue")?;
    let max_receive = number(
        &props["RedrivePolicy"]["maxReceiveCount"],
        "maxReceiveCount",
    )?;
    let redrive =
        serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive })
            .to_string();
    let queue_url = create_queue(
        clients,
        &names.queue,
        vec![
            (
                QueueAttributeName::VisibilityTimeout,
                number(&props["VisibilityTimeout"], "VisibilityTimeout")?,
            ),
            (
                QueueAttributeName::MessageRetentionPeriod,
                number(&props["MessageRetentionPeriod"], "retention")?,
            ),
            (QueueAttributeName::RedrivePolicy, redrive),
        ],
    )
    .await?;

    ensure_secret(clients, &names.provider_secret, provider_credentials).await?;
    ensure_secret(clients, &names.lambda_secret, lambda_credentials).await?;
    ensure_secret(clients, &names.report_secret, report_signing_key).await?;
    ensure_secret(clients, &names.stripe_secret, stripe_keys).await?;
    // A fresh key per run: the local stack forgets its sessions with everything else.
    let session_key = mimiry_shared::auth::ApiKey::generate().hash();
    ensure_secret(clients, &names.session_secret, &session_key).await?;
    ensure_secrets_key(clients, SECRETS_KEY_ALIAS).await?;
    let identity = ensure_identity(clients, template).await?;
    if let Some(from) = &names.notice_from {
        // SES refuses to send from an unverified address (moto too); moto verifies at once.
        clients
            .ses
            .verify_email_identity()
            .email_address(from)
            .send()
            .await
            .map_err(|e| anyhow!(aws_sdk_ses::error::DisplayErrorContext(e)))?;
    }
    Ok(Created {
        queue_url,
        dead_letter_queue_url,
        identity,
    })
}

// --- Identity (Cognito user pool and app client) ---------------------------------------------

/// The user pool and app client the dashboard uses.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_pool_id: String,
    pub client_id: String,
}

fn cognito(clients: &AwsClients) -> aws_sdk_cognitoidentityprovider::Client {
    aws_sdk_cognitoidentityprovider::Client::new(&clients.sdk)
}

fn cognito_err<E, R>(e: aws_sdk_cognitoidentityprovider::error::SdkError<E, R>) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    anyhow!(aws_sdk_cognitoidentityprovider::error::DisplayErrorContext(
        e
    ))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

/// Finds the template's pool and client by name (`UserPoolName`, `ClientName`).
pub async fn find_identity(clients: &AwsClients, template: &Template) -> Result<Option<Identity>> {
    let pool_name = template.properties("UserPool")?["UserPoolName"]
        .as_str()
        .unwrap_or("mimiry-users")
        .to_string();
    let client_name = template.properties("UserPoolClient")?["ClientName"]
        .as_str()
        .unwrap_or("mimiry-dashboard")
        .to_string();
    let cognito = cognito(clients);
    let pools = cognito
        .list_user_pools()
        .max_results(60)
        .send()
        .await
        .map_err(cognito_err)?;
    let Some(pool_id) = pools
        .user_pools()
        .iter()
        .find(|p| p.name() == Some(pool_name.as_str()))
        .and_then(|p| p.id().map(str::to_string))
    else {
        return Ok(None);
    };
    let apps = cognito
        .list_user_pool_clients()
        .user_pool_id(&pool_id)
        .max_results(60)
        .send()
        .await
        .map_err(cognito_err)?;
    Ok(apps
        .user_pool_clients()
        .iter()
        .find(|c| c.client_name() == Some(client_name.as_str()))
        .and_then(|c| c.client_id().map(str::to_string))
        .map(|client_id| Identity {
            user_pool_id: pool_id,
            client_id,
        }))
}

/// Creates the user pool and its app client as template.yaml declares them (the settings the
/// emulator honours: email as user name, verification, password policy, auth flows).
pub async fn ensure_identity(clients: &AwsClients, template: &Template) -> Result<Identity> {
    if let Some(found) = find_identity(clients, template).await? {
        return Ok(found);
    }
    use aws_sdk_cognitoidentityprovider::types::{
        ExplicitAuthFlowsType, PasswordPolicyType, UserPoolPolicyType, UsernameAttributeType,
        VerifiedAttributeType,
    };
    let pool = template.properties("UserPool")?;
    let policy = &pool["Policies"]["PasswordPolicy"];
    let flag = |name: &str| policy[name].as_bool().unwrap_or(false);
    let cognito = cognito(clients);
    let created = cognito
        .create_user_pool()
        .pool_name(pool["UserPoolName"].as_str().unwrap_or("mimiry-users"))
        .set_username_attributes(Some(
            strings(&pool["UsernameAttributes"])
                .iter()
                .map(|a| UsernameAttributeType::from(a.as_str()))
                .collect(),
        ))
        .set_auto_verified_attributes(Some(
            strings(&pool["AutoVerifiedAttributes"])
                .iter()
                .map(|a| VerifiedAttributeType::from(a.as_str()))
                .collect(),
        ))
        .policies(
            UserPoolPolicyType::builder()
                .password_policy(
                    PasswordPolicyType::builder()
                        .minimum_length(policy["MinimumLength"].as_i64().unwrap_or(8) as i32)
                        .require_uppercase(flag("RequireUppercase"))
                        .require_lowercase(flag("RequireLowercase"))
                        .require_numbers(flag("RequireNumbers"))
                        .require_symbols(flag("RequireSymbols"))
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .map_err(cognito_err)
        .context("creating the user pool")?;
    let user_pool_id = created
        .user_pool()
        .and_then(|p| p.id())
        .ok_or_else(|| anyhow!("the new user pool has no id"))?
        .to_string();
    let app = template.properties("UserPoolClient")?;
    let client = cognito
        .create_user_pool_client()
        .user_pool_id(&user_pool_id)
        .client_name(app["ClientName"].as_str().unwrap_or("mimiry-dashboard"))
        .generate_secret(app["GenerateSecret"].as_bool().unwrap_or(false))
        .set_explicit_auth_flows(Some(
            strings(&app["ExplicitAuthFlows"])
                .iter()
                .map(|f| ExplicitAuthFlowsType::from(f.as_str()))
                .collect(),
        ))
        .send()
        .await
        .map_err(cognito_err)
        .context("creating the user pool client")?;
    let client_id = client
        .user_pool_client()
        .and_then(|c| c.client_id())
        .ok_or_else(|| anyhow!("the new app client has no id"))?
        .to_string();
    Ok(Identity {
        user_pool_id,
        client_id,
    })
}

/// A person who can sign in at once (the local demo login): created by the operator with a
/// permanent password and a verified email, as an invited user who finished sign-up would be.
pub async fn create_verified_user(
    clients: &AwsClients,
    identity: &Identity,
    email: &str,
    password: &str,
) -> Result<()> {
    use aws_sdk_cognitoidentityprovider::types::{AttributeType, MessageActionType};
    let cognito = cognito(clients);
    let attribute = |name: &str, value: &str| {
        AttributeType::builder()
            .name(name)
            .value(value)
            .build()
            .map_err(|e| anyhow!(e))
    };
    cognito
        .admin_create_user()
        .user_pool_id(&identity.user_pool_id)
        .username(email)
        .user_attributes(attribute("email", email)?)
        .user_attributes(attribute("email_verified", "true")?)
        .message_action(MessageActionType::Suppress)
        .send()
        .await
        .map_err(cognito_err)
        .context("creating the user")?;
    cognito
        .admin_set_user_password()
        .user_pool_id(&identity.user_pool_id)
        .username(email)
        .password(password)
        .permanent(true)
        .send()
        .await
        .map_err(cognito_err)
        .context("setting the user's password")?;
    Ok(())
}
