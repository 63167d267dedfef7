//! Reading an account's ledger a page at a time, newest first (`GET /account/ledger`).

use super::accounts::LedgerEntry;
use super::{account_pk, aws_err, cursor, from_item, s, Item, Store};
use crate::error::ApiError;
use aws_sdk_dynamodb::types::AttributeValue;

const PREFIX: &str = "LEDGER#";

pub struct LedgerPage {
    pub entries: Vec<LedgerEntry>,
    pub next_cursor: Option<String>,
}

/// A cursor is the last entry's sort key without the prefix: `{time:013}#{entry id}`.
fn cursor_decode(c: &str) -> Result<String, ApiError> {
    let position = cursor::decode(c)?;
    let (at, id) = position.split_once('#').ok_or_else(cursor::invalid)?;
    if at.len() != 13
        || !at.bytes().all(|b| b.is_ascii_digit())
        || uuid::Uuid::parse_str(id).is_err()
    {
        return Err(cursor::invalid());
    }
    Ok(position)
}

impl Store {
    /// Newest first; `limit` ≤ 100.
    pub async fn ledger_page(
        &self,
        account_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<LedgerPage, ApiError> {
        let mut start: Option<Item> = match cursor {
            Some(c) => Some(
                [
                    ("PK".to_string(), s(account_pk(account_id))),
                    (
                        "SK".to_string(),
                        s(format!("{PREFIX}{}", cursor_decode(c)?)),
                    ),
                ]
                .into_iter()
                .collect(),
            ),
            None => None,
        };
        let mut entries = Vec::new();
        loop {
            let out = self
                .db
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
                .expression_attribute_values(":pk", s(account_pk(account_id)))
                .expression_attribute_values(":p", s(PREFIX))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit((limit - entries.len()) as i32)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(aws_err)?;
            for item in out.items.unwrap_or_default() {
                entries.push(from_item::<LedgerEntry>(item)?);
            }
            match out.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(k) if entries.len() < limit => start = Some(k),
                Some(k) => {
                    let next_cursor = match k.get("SK") {
                        Some(AttributeValue::S(sk)) => sk.strip_prefix(PREFIX).map(cursor::encode),
                        _ => None,
                    };
                    return Ok(LedgerPage {
                        entries,
                        next_cursor,
                    });
                }
                None => {
                    return Ok(LedgerPage {
                        entries,
                        next_cursor: None,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_tampering() {
        let position = format!("{:013}#{}", 1_700_000_000_000i64, uuid::Uuid::new_v4());
        assert_eq!(cursor_decode(&cursor::encode(&position)).unwrap(), position);
        for bad in [
            "x",
            "1#2",
            "1700000000000#not-a-uuid",
            "17000000000000#00000000-0000-0000-0000-000000000000",
        ] {
            assert!(cursor_decode(&cursor::encode(bad)).is_err(), "{bad}");
        }
        assert!(cursor_decode("not base64!").is_err());
    }
}
