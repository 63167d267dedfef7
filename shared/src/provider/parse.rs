//! Tolerant parsing of DataCrunch responses.
//!
//! Everything goes through `serde_json::Value` and small lenient accessors rather than strict
//! serde structs: unknown fields are ignored, numbers and booleans may arrive as strings,
//! optional objects may be missing or partial, and ids may be plain text or JSON. A list entry
//! that lacks what we cannot do without (its id / code) is skipped with a warning instead of
//! failing the whole list.

use super::{
    ImageInfo, InstanceInfo, InstanceStatus, InstanceTypeInfo, LocationAvailability, LocationInfo,
    ProviderError, ScriptInfo, VolumeInfo,
};
use crate::money::Micros;
use serde_json::Value;

/// How long a provider message may be when copied into an error.
const MAX_MESSAGE: usize = 300;

/// A string from a string, number or boolean; `None` for null, missing, objects, arrays and
/// blank strings.
pub(crate) fn lenient_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => {
            let t = s.trim();
            (!t.is_empty()).then(|| t.to_string())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A non-negative whole number from a number (`4`, `4.0`) or a string (`"4"`, `" 4.0 "`).
pub(crate) fn lenient_u32(v: Option<&Value>) -> Option<u32> {
    fn from_f64(f: f64) -> Option<u32> {
        (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= u32::MAX as f64).then_some(f as u32)
    }
    match v? {
        Value::Number(n) => match n.as_u64() {
            Some(u) => u32::try_from(u).ok(),
            None => from_f64(n.as_f64()?),
        },
        Value::String(s) => {
            let t = s.trim();
            t.parse::<u32>()
                .ok()
                .or_else(|| t.parse::<f64>().ok().and_then(from_f64))
        }
        _ => None,
    }
}

/// A boolean from `true`, `"true"`, `"True"`, `"1"`, `1`, `"yes"` (and their negatives).
pub(crate) fn lenient_bool(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// An exact amount from a decimal string (`"3.95"`) or a JSON number (`3.95`, `2`).
pub(crate) fn lenient_micros(v: Option<&Value>) -> Option<Micros> {
    match v? {
        Value::String(s) => Micros::parse_decimal(s).ok(),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                return u
                    .checked_mul(1_000_000)
                    .and_then(|m| i64::try_from(m).ok())
                    .map(Micros);
            }
            // serde_json prints floats in their shortest exact form ("3.95"), which parses
            // exactly; exponent forms ("1e-5") fall back to rounding to the micro.
            Micros::parse_decimal(&n.to_string()).ok().or_else(|| {
                let f = n.as_f64()?;
                (0.0..9.0e12)
                    .contains(&f)
                    .then(|| Micros((f * 1e6).round() as i64))
            })
        }
        _ => None,
    }
}

/// An array of strings; non-string items are stringified or skipped.
fn lenient_string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| lenient_string(Some(i)))
            .collect(),
        Some(other) => lenient_string(Some(other)).into_iter().collect(),
        None => Vec::new(),
    }
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object()?.get(name)
}

/// The first present, non-null field of `names`.
fn first<'a>(v: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .find_map(|n| field(v, n).filter(|x| !x.is_null()))
}

fn string_or_default(v: &Value, names: &[&str]) -> String {
    lenient_string(first(v, names)).unwrap_or_default()
}

/// An id from a create/deploy response body: `abc`, `"abc"`, `{"id":"abc"}` or `["abc"]`,
/// surrounding whitespace and quotes stripped.
pub(crate) fn parse_id(body: &str) -> Option<String> {
    let t = body.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        let from_json = match &v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Object(_) => lenient_string(first(&v, &["id", "instance_id", "instanceId"])),
            Value::Array(items) if items.len() == 1 => parse_id(&items[0].to_string()),
            _ => None,
        };
        return from_json
            .map(|s| s.trim().trim_matches(['"', '\'']).trim().to_string())
            .filter(|s| !s.is_empty());
    }
    let s = t.trim_matches(['"', '\'']).trim();
    // A plain-text id is one token; anything else (an HTML page, prose) is not an id.
    (!s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || "<>{}[],".contains(c)))
    .then(|| s.to_string())
}

/// The items of a list response. A bare object counts as a one-element list (some "get"
/// routes return an array, some an object); `{"data":[…]}`-style wrappers are unwrapped.
pub(crate) fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        Value::Object(ref m) => {
            for key in ["data", "items", "results"] {
                if let Some(Value::Array(items)) = m.get(key) {
                    return items.clone();
                }
            }
            vec![v]
        }
        Value::Null => Vec::new(),
        _ => Vec::new(),
    }
}

/// Parses a success body as JSON, or says which call returned garbage.
pub(crate) fn json_body(status: u16, what: &str, body: &str) -> Result<Value, ProviderError> {
    serde_json::from_str(body).map_err(|e| ProviderError::Server {
        status,
        message: format!("unreadable {what} response ({e})"),
    })
}

fn skip(what: &str, v: &Value) {
    tracing::warn!(
        entry = %truncate(&v.to_string(), 200),
        "skipping a {what} entry the provider sent without an id"
    );
}

pub(crate) fn instance_type(v: &Value) -> Option<InstanceTypeInfo> {
    let instance_type = lenient_string(first(v, &["instance_type", "name", "id"]))?;
    let Some(price_per_hour) = lenient_micros(first(v, &["price_per_hour", "price"])) else {
        tracing::warn!(%instance_type, "skipping an instance type without a readable price");
        return None;
    };
    let sub = |obj: &str, names: &[&str]| field(v, obj).and_then(|o| first(o, names));
    Some(InstanceTypeInfo {
        description: string_or_default(v, &["description", "display_name", "name"]),
        price_per_hour,
        spot_price: lenient_micros(first(v, &["spot_price"])),
        gpu_description: lenient_string(sub("gpu", &["description"])).unwrap_or_default(),
        gpu_count: lenient_u32(sub("gpu", &["number_of_gpus", "count"])).unwrap_or(0),
        gpu_memory_gb: lenient_u32(sub("gpu_memory", &["size_in_gigabytes"])),
        cpu_description: lenient_string(sub("cpu", &["description"])).unwrap_or_default(),
        cpu_cores: lenient_u32(sub("cpu", &["number_of_cores", "count"])).unwrap_or(0),
        memory_gb: lenient_u32(sub("memory", &["size_in_gigabytes"])),
        storage_description: lenient_string(sub("storage", &["description"])).unwrap_or_default(),
        storage_gb: lenient_u32(sub("storage", &["size_in_gigabytes"])),
        instance_type,
    })
}

pub(crate) fn instance_types(v: Value) -> Vec<InstanceTypeInfo> {
    items(v)
        .iter()
        .filter_map(|i| {
            let r = instance_type(i);
            if r.is_none() && lenient_string(first(i, &["instance_type", "name", "id"])).is_none() {
                skip("instance type", i);
            }
            r
        })
        .collect()
}

pub(crate) fn availability(v: Value) -> Vec<LocationAvailability> {
    items(v)
        .iter()
        .filter_map(|i| {
            let Some(location_code) =
                lenient_string(first(i, &["location_code", "code", "location"]))
            else {
                skip("availability", i);
                return None;
            };
            Some(LocationAvailability {
                location_code,
                instance_types: lenient_string_list(first(
                    i,
                    &["availabilities", "instance_types", "availability"],
                )),
            })
        })
        .collect()
}

pub(crate) fn locations(v: Value) -> Vec<LocationInfo> {
    items(v)
        .iter()
        .filter_map(|i| {
            let Some(code) = lenient_string(first(i, &["code", "location_code"])) else {
                skip("location", i);
                return None;
            };
            Some(LocationInfo {
                name: string_or_default(i, &["name"]),
                country_code: string_or_default(i, &["country_code", "country"]),
                code,
            })
        })
        .collect()
}

pub(crate) fn images(v: Value) -> Vec<ImageInfo> {
    items(v)
        .iter()
        .filter_map(|i| {
            let id = lenient_string(first(i, &["id"]));
            let image_type = lenient_string(first(i, &["image_type"]));
            if id.is_none() && image_type.is_none() {
                skip("image", i);
                return None;
            }
            Some(ImageInfo {
                id: id
                    .clone()
                    .or_else(|| image_type.clone())
                    .unwrap_or_default(),
                name: string_or_default(i, &["name"]),
                image_type: image_type.or(id).unwrap_or_default(),
                details: lenient_string_list(first(i, &["details"])),
                is_default: lenient_bool(first(i, &["is_default"])).unwrap_or(false),
            })
        })
        .collect()
}

pub(crate) fn scripts(v: Value) -> Vec<ScriptInfo> {
    items(v)
        .iter()
        .filter_map(|i| {
            let Some(id) = lenient_string(first(i, &["id"])) else {
                skip("script", i);
                return None;
            };
            Some(ScriptInfo {
                id,
                name: string_or_default(i, &["name"]),
            })
        })
        .collect()
}

/// Volumes of `GET /volumes` or `GET /volumes/trash` (`in_trash` says which).
pub(crate) fn volumes(v: Value, in_trash: bool) -> Vec<VolumeInfo> {
    items(v)
        .iter()
        .filter_map(|i| {
            let Some(id) = lenient_string(first(i, &["id"])) else {
                skip("volume", i);
                return None;
            };
            Some(VolumeInfo {
                id,
                name: string_or_default(i, &["name"]),
                instance_id: lenient_string(first(i, &["instance_id"])),
                in_trash,
            })
        })
        .collect()
}

pub(crate) fn instance(v: &Value) -> Option<InstanceInfo> {
    let id = lenient_string(first(v, &["id", "instance_id", "instanceId"]))?;
    let status = match lenient_string(first(v, &["status"])) {
        Some(s) => InstanceStatus::parse(&s),
        None => InstanceStatus::Unknown(String::new()),
    };
    // `location` is a code; tolerate an object `{code, …}` too.
    let location = match first(v, &["location", "location_code"]) {
        Some(obj @ Value::Object(_)) => string_or_default(obj, &["code", "location_code"]),
        other => lenient_string(other).unwrap_or_default(),
    };
    Some(InstanceInfo {
        id,
        instance_type: string_or_default(v, &["instance_type"]),
        status,
        hostname: string_or_default(v, &["hostname"]),
        description: string_or_default(v, &["description"]),
        location,
        ip: lenient_string(first(v, &["ip", "ip_address"])),
        created_at: lenient_string(first(v, &["created_at"])),
        startup_script_id: lenient_string(first(v, &["startup_script_id"])),
        price_per_hour: lenient_micros(first(v, &["price_per_hour"])),
        os_volume_id: lenient_string(first(v, &["os_volume_id"])),
    })
}

pub(crate) fn instances(v: Value) -> Vec<InstanceInfo> {
    items(v)
        .iter()
        .filter_map(|i| {
            let r = instance(i);
            if r.is_none() {
                skip("instance", i);
            }
            r
        })
        .collect()
}

/// `{"code","message"}` from an error body; a non-JSON body becomes the message.
pub(crate) fn error_body(body: &str) -> (String, String) {
    match serde_json::from_str::<Value>(body) {
        Ok(v @ Value::Object(_)) => {
            let code = string_or_default(&v, &["code", "error_code"]);
            let message = lenient_string(first(&v, &["message", "error", "detail", "details"]))
                .unwrap_or_else(|| truncate(body.trim(), MAX_MESSAGE));
            (code, truncate(&message, MAX_MESSAGE))
        }
        Ok(Value::String(s)) => (String::new(), truncate(&s, MAX_MESSAGE)),
        _ => (String::new(), truncate(body.trim(), MAX_MESSAGE)),
    }
}

/// Which call an error came from, where the same status means different things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    Deploy,
    Other,
}

/// The typed error for a non-success response.
pub(crate) fn classify(status: u16, body: &str, kind: CallKind) -> ProviderError {
    let (code, message) = error_body(body);
    let message = if message.is_empty() {
        format!("HTTP {status}")
    } else {
        message
    };
    let lower = message.to_ascii_lowercase();
    let code = code.to_ascii_lowercase();

    if status == 401 || code == "unauthorized_request" {
        return ProviderError::Auth(message);
    }
    if status == 402 || code == "insufficient_funds" {
        return ProviderError::InsufficientFunds(message);
    }
    if status == 429 || code == "rate_limit_exceeded" {
        // The client reads the real wait from the headers; this is the fallback.
        return ProviderError::RateLimited {
            retry_after: std::time::Duration::from_secs(10),
        };
    }
    if kind == CallKind::Deploy
        && (lower.contains("not enough resources")
            || lower.contains("no capacity")
            || (status == 503 && code == "service_unavailable"))
    {
        return ProviderError::NoCapacity(message);
    }
    if (status == 403 || code == "forbidden_action") && lower.contains("quota") {
        return ProviderError::QuotaExceeded(message);
    }
    if status == 404 || code == "not_found" || lower.contains("invalid instance id") {
        return ProviderError::NotFound(message);
    }
    if status == 408 || status >= 500 {
        return ProviderError::Server { status, message };
    }
    ProviderError::InvalidRequest(if code.is_empty() {
        message
    } else {
        format!("{code}: {message}")
    })
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_as_text_or_json() {
        assert_eq!(parse_id("abc-123").as_deref(), Some("abc-123"));
        assert_eq!(parse_id("  abc-123\n").as_deref(), Some("abc-123"));
        assert_eq!(parse_id("\"abc-123\"").as_deref(), Some("abc-123"));
        assert_eq!(parse_id(" \"abc-123\" \n").as_deref(), Some("abc-123"));
        assert_eq!(parse_id("{\"id\":\"abc\"}").as_deref(), Some("abc"));
        assert_eq!(parse_id("[\"abc\"]").as_deref(), Some("abc"));
        assert_eq!(parse_id("12345").as_deref(), Some("12345"));
        assert_eq!(parse_id(""), None);
        assert_eq!(parse_id("\"\""), None);
        assert_eq!(parse_id("<html>oops</html>"), None);
        assert_eq!(parse_id("{}"), None);
    }

    #[test]
    fn lenient_scalars() {
        assert_eq!(lenient_u32(Some(&json!(4))), Some(4));
        assert_eq!(lenient_u32(Some(&json!("4"))), Some(4));
        assert_eq!(lenient_u32(Some(&json!(" 80.0 "))), Some(80));
        assert_eq!(lenient_u32(Some(&json!(80.0))), Some(80));
        assert_eq!(lenient_u32(Some(&json!(-1))), None);
        assert_eq!(lenient_u32(Some(&json!("dynamic"))), None);
        assert_eq!(lenient_u32(Some(&json!(null))), None);
        assert_eq!(lenient_u32(None), None);

        assert_eq!(lenient_bool(Some(&json!(true))), Some(true));
        assert_eq!(lenient_bool(Some(&json!("true"))), Some(true));
        assert_eq!(lenient_bool(Some(&json!("False"))), Some(false));
        assert_eq!(lenient_bool(Some(&json!(1))), Some(true));
        assert_eq!(lenient_bool(Some(&json!("maybe"))), None);

        assert_eq!(
            lenient_micros(Some(&json!("3.95"))),
            Some(Micros(3_950_000))
        );
        assert_eq!(lenient_micros(Some(&json!(3.95))), Some(Micros(3_950_000)));
        assert_eq!(lenient_micros(Some(&json!(2))), Some(Micros(2_000_000)));
        assert_eq!(lenient_micros(Some(&json!(0.00001))), Some(Micros(10)));
        assert_eq!(lenient_micros(Some(&json!("n/a"))), None);
        assert_eq!(lenient_micros(Some(&json!(null))), None);

        assert_eq!(lenient_string(Some(&json!(42))).as_deref(), Some("42"));
        assert_eq!(lenient_string(Some(&json!("  "))), None);
    }

    #[test]
    fn instance_type_full_and_partial() {
        let v = json!([
            {
                "id": "c01dd00d-0000-0000-0000-000000000001",
                "instance_type": "1H100.80S.30V",
                "price_per_hour": "3.95",
                "spot_price": "1.10",
                "description": "Dedicated Hardware Instance",
                "cpu": {"description": "30 CPU", "number_of_cores": 30},
                "gpu": {"description": "1x H100 SXM5 80GB", "number_of_gpus": "1"},
                "gpu_memory": {"description": "80GB GPU RAM", "size_in_gigabytes": 80},
                "memory": {"description": "120GB RAM", "size_in_gigabytes": "120"},
                "storage": {"description": "dynamic"},
                "best_for": ["training"], "p2p": "true", "model": "H100", "currency": "usd"
            },
            {
                "instance_type": "CPU.4V.16G",
                "price_per_hour": 0.1,
                "cpu": {"number_of_cores": 4},
                "gpu": {"description": "", "number_of_gpus": 0}
            },
            {"instance_type": "NOPRICE"},
            {"description": "no id at all", "price_per_hour": "1.00"}
        ]);
        let types = instance_types(v);
        assert_eq!(types.len(), 2);
        let h = &types[0];
        assert_eq!(h.instance_type, "1H100.80S.30V");
        assert_eq!(h.price_per_hour, Micros(3_950_000));
        assert_eq!(h.spot_price, Some(Micros(1_100_000)));
        assert_eq!(h.gpu_count, 1);
        assert_eq!(h.gpu_description, "1x H100 SXM5 80GB");
        assert_eq!(h.gpu_memory_gb, Some(80));
        assert_eq!(h.cpu_cores, 30);
        assert_eq!(h.memory_gb, Some(120));
        assert_eq!(h.storage_description, "dynamic");
        assert_eq!(h.storage_gb, None);
        let c = &types[1];
        assert_eq!(c.instance_type, "CPU.4V.16G");
        assert_eq!(c.price_per_hour, Micros(100_000));
        assert_eq!(c.spot_price, None);
        assert_eq!(c.gpu_count, 0);
        assert_eq!(c.memory_gb, None);
        assert_eq!(c.storage_description, "");
    }

    #[test]
    fn availability_locations_images_scripts() {
        let a = availability(json!([
            {"location_code": "FIN-01", "availabilities": ["1V100.6V", "8V100.48V"]},
            {"location_code": "ICE-01", "availabilities": null},
            {"availabilities": ["x"]}
        ]));
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].instance_types, vec!["1V100.6V", "8V100.48V"]);
        assert!(a[1].instance_types.is_empty());

        let l = locations(json!([{"code": "FIN-01", "name": "Finland 1", "country_code": "FI"}]));
        assert_eq!(
            l,
            vec![LocationInfo {
                code: "FIN-01".into(),
                name: "Finland 1".into(),
                country_code: "FI".into()
            }]
        );

        let i = images(json!([
            {"id": "0888da25", "name": "Ubuntu 20.04 + CUDA 11.0",
             "image_type": "ubuntu-20.04-cuda-11.0", "details": ["Ubuntu 20.04", "CUDA 11.0"],
             "is_default": "true", "is_cluster": false, "category": "ubuntu"},
            {"id": "x2", "image_type": "ubuntu-22.04"}
        ]));
        assert_eq!(i.len(), 2);
        assert!(i[0].is_default);
        assert_eq!(i[0].details, vec!["Ubuntu 20.04", "CUDA 11.0"]);
        assert!(!i[1].is_default);
        assert_eq!(i[1].name, "");

        let s = scripts(json!([{"id": "s1", "name": "boot", "script": "#!/bin/bash"}]));
        assert_eq!(
            s,
            vec![ScriptInfo {
                id: "s1".into(),
                name: "boot".into()
            }]
        );
        // A one-element "get" array and a bare object both work.
        assert_eq!(scripts(json!({"id": "s2", "name": "n"})).len(), 1);
    }

    #[test]
    fn instance_parsing() {
        let v = json!({
            "id": "inst-1", "instance_type": "1V100.6V", "status": "provisioning",
            "hostname": "job-abc", "description": "job-abc", "created_at": "2025-01-01T00:00:00Z",
            "location": "FIN-01", "ip": null, "os_volume_id": null, "price_per_hour": 0.89,
            "is_spot": false, "image": "ubuntu-22.04", "startup_script_id": "s1",
            "ssh_key_ids": ["k1"], "cpu": {"number_of_cores": 6}, "gpu": {"number_of_gpus": 1}
        });
        let i = instance(&v).unwrap();
        assert_eq!(i.status, InstanceStatus::Provisioning);
        assert_eq!(i.ip, None);
        assert_eq!(i.location, "FIN-01");
        assert_eq!(i.price_per_hour, Some(Micros(890_000)));
        assert_eq!(i.startup_script_id.as_deref(), Some("s1"));
        assert_eq!(i.os_volume_id, None, "null until provisioned");
        let mut provisioned = v.clone();
        provisioned["os_volume_id"] = json!("5e9e63a9-fc3b-427b-b259-0c77dce61090");
        provisioned["status"] = json!("installation_failed");
        let i = instance(&provisioned).unwrap();
        assert_eq!(
            i.os_volume_id.as_deref(),
            Some("5e9e63a9-fc3b-427b-b259-0c77dce61090")
        );
        assert_eq!(i.status, InstanceStatus::InstallationFailed);

        let list = instances(json!([
            {"id": "a", "status": "running", "ip": "1.2.3.4", "price_per_hour": "1.5"},
            {"status": "running"},
            {"id": "b", "status": "weird_new_state", "location": {"code": "ICE-01"}}
        ]));
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].ip.as_deref(), Some("1.2.3.4"));
        assert_eq!(
            list[1].status,
            InstanceStatus::Unknown("weird_new_state".into())
        );
        assert_eq!(list[1].location, "ICE-01");
    }

    #[test]
    fn error_classification() {
        let cap = r#"{"code":"service_unavailable","message":"Not enough resources to deploy a 1 GPU instance type 1V100.6V in FIN-03"}"#;
        assert!(matches!(
            classify(503, cap, CallKind::Deploy),
            ProviderError::NoCapacity(_)
        ));
        assert!(matches!(
            classify(503, cap, CallKind::Other),
            ProviderError::Server { status: 503, .. }
        ));
        assert!(matches!(
            classify(
                503,
                r#"{"code":"server_error","message":"boom"}"#,
                CallKind::Deploy
            ),
            ProviderError::Server { status: 503, .. }
        ));
        // A bare 503 (e.g. from a proxy) is not a capacity answer: the caller must look for
        // the instance by hostname before moving on.
        assert!(matches!(
            classify(503, "", CallKind::Deploy),
            ProviderError::Server { status: 503, .. }
        ));
        assert!(matches!(
            classify(
                400,
                r#"{"message":"Not enough resources to deploy"}"#,
                CallKind::Deploy
            ),
            ProviderError::NoCapacity(_)
        ));
        assert!(matches!(
            classify(
                400,
                r#"{"code":"invalid_request","message":"Invalid instance id"}"#,
                CallKind::Other
            ),
            ProviderError::NotFound(_)
        ));
        assert!(matches!(
            classify(404, "", CallKind::Other),
            ProviderError::NotFound(_)
        ));
        assert!(matches!(
            classify(
                400,
                r#"{"code":"unauthorized_request","message":"bad"}"#,
                CallKind::Other
            ),
            ProviderError::Auth(_)
        ));
        assert!(matches!(
            classify(401, "nope", CallKind::Other),
            ProviderError::Auth(_)
        ));
        assert!(matches!(
            classify(
                402,
                r#"{"code":"insufficient_funds","message":"top up"}"#,
                CallKind::Deploy
            ),
            ProviderError::InsufficientFunds(_)
        ));
        match classify(
            400,
            r#"{"code":"forbidden_action","message":"Can't discontinue a provisioning instance"}"#,
            CallKind::Other,
        ) {
            ProviderError::InvalidRequest(m) => assert!(m.starts_with("forbidden_action: ")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(429, "slow down", CallKind::Deploy),
            ProviderError::RateLimited { .. }
        ));
        // The code decides, whatever the status.
        assert!(matches!(
            classify(
                400,
                r#"{"code":"rate_limit_exceeded","message":"Too many requests"}"#,
                CallKind::Other
            ),
            ProviderError::RateLimited { .. }
        ));
        // Verda's OpenAPI: deploy capacity answers 503 `service_unavailable` "No capacity available".
        assert!(matches!(
            classify(
                503,
                r#"{"code":"service_unavailable","message":"No capacity available"}"#,
                CallKind::Deploy
            ),
            ProviderError::NoCapacity(_)
        ));
        // `forbidden_action` is 403 in the error table and 400 in the PUT docs: same error.
        for status in [400, 403] {
            match classify(
                status,
                r#"{"code":"forbidden_action","message":"Can't discontinue a provisioning instance"}"#,
                CallKind::Other,
            ) {
                ProviderError::InvalidRequest(m) => assert!(m.starts_with("forbidden_action: ")),
                other => panic!("{status}: {other:?}"),
            }
        }
        match classify(502, "<html>bad gateway</html>", CallKind::Other) {
            ProviderError::Server { status, message } => {
                assert_eq!(status, 502);
                assert_eq!(message, "<html>bad gateway</html>");
            }
            other => panic!("{other:?}"),
        }
        let long = "x".repeat(1000);
        match classify(500, &long, CallKind::Other) {
            ProviderError::Server { message, .. } => assert!(message.len() < 400),
            other => panic!("{other:?}"),
        }
    }
}
