//! Creates the emulated AWS resources (moto locally) exactly as template.yaml declares them:
//! the table's keys and index, the jobs queue's visibility timeout and redrive policy, and the
//! secrets. Safe to run again: what exists is left as it is.

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
    pub report_secret: String,
    pub stripe_secret: String,
}

pub struct Created {
    pub queue_url: String,
    pub dead_letter_queue_url: String,
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

fn number(v: &Value, what: &str) -> Result<String> {
    match v {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        _ => Err(anyhow!("template.yaml: {what} is not a number")),
    }
}

/// Creates everything; `provider_credentials` and `stripe_keys` are the JSON the provider and
/// Stripe secrets hold.
pub async fn bootstrap(
    clients: &AwsClients,
    template: &Template,
    names: &Names,
    provider_credentials: &str,
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
    ensure_secret(clients, &names.report_secret, report_signing_key).await?;
    ensure_secret(clients, &names.stripe_secret, stripe_keys).await?;
    Ok(Created {
        queue_url,
        dead_letter_queue_url,
    })
}
