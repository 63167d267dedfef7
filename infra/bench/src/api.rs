//! `GET /jobs/{id}` and `POST /jobs` through the local server, each request interleaved with
//! its floor (a bare `GetItem` / `TransactWriteItems` to the same moto from this process), and
//! the AWS and provider calls each request makes.

use crate::results::{ms, percentile, Results};
use crate::stack::{counted, summarize, Stack};
use anyhow::{anyhow, bail, Result};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Instant;

/// The body of every benchmark submit: the guide's example, with a script that ends at once.
pub fn submit_body(script: &str) -> Value {
    json!({
        "name": "bench",
        "instance_type": "1V100.6V",
        "image": "ubuntu-22.04-cuda-12.0",
        "location": "FIN-01",
        "startup_script": script,
        "auto_shutdown": true
    })
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

async fn floor_get(stack: &Stack, job_id: &str) -> Result<()> {
    stack
        .job_item(job_id)
        .await?
        .ok_or_else(|| anyhow!("floor: no job item"))?;
    Ok(())
}

/// A transaction shaped like a submit's: a conditional put of a job-sized item, an account-style
/// counter update and a ledger-style put. Items live under `BENCH#floor`, outside the index.
async fn floor_transact(
    stack: &Stack,
    template: &HashMap<String, AttributeValue>,
    i: usize,
) -> Result<()> {
    let pk = AttributeValue::S("BENCH#floor".into());
    let mut item = template.clone();
    item.remove("GSI1PK");
    item.remove("GSI1SK");
    item.insert("PK".into(), pk.clone());
    item.insert(
        "SK".into(),
        AttributeValue::S(format!("JOB#{i:06}-{}", std::process::id())),
    );
    let put = Put::builder()
        .table_name(&stack.table)
        .set_item(Some(item))
        .condition_expression("attribute_not_exists(PK)")
        .build()
        .map_err(err)?;
    let update = Update::builder()
        .table_name(&stack.table)
        .key("PK", pk.clone())
        .key("SK", AttributeValue::S("COUNTER".into()))
        .update_expression("ADD n :one")
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .build()
        .map_err(err)?;
    let ledger = Put::builder()
        .table_name(&stack.table)
        .item("PK", pk)
        .item(
            "SK",
            AttributeValue::S(format!("LEDGER#{i:06}-{}", std::process::id())),
        )
        .item("amount_micros", AttributeValue::N("1000".into()))
        .item("kind", AttributeValue::S("hold".into()))
        .build()
        .map_err(err)?;
    stack
        .db
        .transact_write_items()
        .transact_items(TransactWriteItem::builder().put(put).build())
        .transact_items(TransactWriteItem::builder().update(update).build())
        .transact_items(TransactWriteItem::builder().put(ledger).build())
        .send()
        .await
        .map_err(|e| anyhow!(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()))?;
    Ok(())
}

/// Removes what [`floor_transact`] wrote (untimed): moto copies the whole table on every
/// transaction, so the floor must not make the table grow for the requests it is compared with.
async fn floor_cleanup(stack: &Stack, i: usize) -> Result<()> {
    for sk in [
        format!("JOB#{i:06}-{}", std::process::id()),
        format!("LEDGER#{i:06}-{}", std::process::id()),
    ] {
        stack
            .db
            .delete_item()
            .table_name(&stack.table)
            .key("PK", AttributeValue::S("BENCH#floor".into()))
            .key("SK", AttributeValue::S(sk))
            .send()
            .await
            .map_err(|e| anyhow!(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()))?;
    }
    Ok(())
}

fn summarize_latency(results: &mut Results, key: &str, api: &[f64], floor: &[f64]) {
    results.set(format!("api.{key}.p50_ms"), percentile(api, 50.0));
    results.set(format!("api.{key}.p99_ms"), percentile(api, 99.0));
    results.set(format!("api.{key}.floor_p50_ms"), percentile(floor, 50.0));
    results.set(format!("api.{key}.floor_p99_ms"), percentile(floor, 99.0));
    results.set(format!("api.{key}.samples"), api.len() as f64);
}

/// Records `n` calls of `request` and stores calls per request.
async fn count_calls<F, Fut>(
    stack: &Stack,
    results: &mut Results,
    key: &str,
    n: usize,
    mut request: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    stack.record().await?;
    let before = stack.provider_count().await?;
    for _ in 0..n {
        request().await?;
    }
    let calls = stack.recorded().await?;
    let provider = stack.provider_count().await?.since(&before);
    let aws = counted(&calls);
    results.set(format!("api.{key}.aws_calls"), aws.len() as f64 / n as f64);
    results.set(
        format!("api.{key}.provider_calls"),
        provider.total as f64 / n as f64,
    );
    results.note(format!(
        "{key}: {n} requests made AWS [{}] provider {:?}",
        summarize(aws.iter().copied()),
        provider.by_route
    ));
    Ok(())
}

/// Runs the latency benchmarks (the local server runs without its worker: submitted jobs stay
/// queued and nothing else touches moto).
pub async fn run(
    stack: &Stack,
    job_id: &str,
    get_n: usize,
    post_n: usize,
    results: &mut Results,
) -> Result<()> {
    let get_path = format!("/jobs/{job_id}");
    let get = || async {
        let (status, body) = stack.api("GET", &get_path, None).await?;
        if status != 200 {
            bail!("GET {get_path}: {status} {body}");
        }
        Ok(())
    };
    eprintln!("latency: GET /jobs/{{id}} × {get_n} (+ GetItem floor)");
    for _ in 0..20 {
        get().await?;
        floor_get(stack, job_id).await?;
    }
    let (mut api, mut floor) = (Vec::with_capacity(get_n), Vec::with_capacity(get_n));
    for _ in 0..get_n {
        let t = Instant::now();
        get().await?;
        api.push(ms(t.elapsed()));
        let t = Instant::now();
        floor_get(stack, job_id).await?;
        floor.push(ms(t.elapsed()));
    }
    summarize_latency(results, "get_job", &api, &floor);

    eprintln!("latency: POST /jobs × {post_n} (+ TransactWriteItems floor)");
    let template = stack
        .job_item(job_id)
        .await?
        .ok_or_else(|| anyhow!("no job item"))?;
    let body = submit_body("echo bench");
    for i in 0..5 {
        stack.submit(&body).await?;
        floor_transact(stack, &template, 1_000_000 + i).await?;
        floor_cleanup(stack, 1_000_000 + i).await?;
    }
    let (mut api, mut floor) = (Vec::with_capacity(post_n), Vec::with_capacity(post_n));
    for i in 0..post_n {
        let t = Instant::now();
        stack.submit(&body).await?;
        api.push(ms(t.elapsed()));
        let t = Instant::now();
        floor_transact(stack, &template, i).await?;
        floor.push(ms(t.elapsed()));
        floor_cleanup(stack, i).await?;
    }
    summarize_latency(results, "post_job", &api, &floor);

    count_calls(stack, results, "get_job", 20, get).await?;
    count_calls(stack, results, "post_job", 20, || async {
        stack.submit(&body).await?;
        Ok(())
    })
    .await
}
