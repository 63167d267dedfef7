//! Run after the whole suite (`infra/test.sh` does): no log line of any process the tests
//! started may contain an API key, a provider secret or token, or a report token — nor, from
//! the dashboard, a password typed into it, a Cognito token (JWT) or a session cookie — nor a
//! webhook signing secret (`whsec_…`).

use mimiry_tests::log_dir;

#[test]
#[ignore = "run after the suite by infra/test.sh"]
fn no_log_line_holds_key_material() {
    let dir = log_dir();
    let secrets: Vec<String> = std::fs::read_to_string(dir.join("issued-secrets.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .filter(|s| s.len() >= 12)
        .collect();
    assert!(
        !secrets.is_empty(),
        "the suite recorded no issued keys: did it run?"
    );
    let mut logs = 0;
    let mut lines = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        logs += 1;
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines() {
            lines += 1;
            for secret in &secrets {
                assert!(
                    !line.contains(secret.as_str()),
                    "{} leaks a secret: {line}",
                    path.display()
                );
            }
            // Any key-shaped string at all, even one the suite did not record.
            if let Some(i) = line.find("mky_") {
                let tail: String = line[i + 4..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                assert!(
                    tail.len() < 20,
                    "{} holds something key-shaped: {line}",
                    path.display()
                );
            }
            // A webhook signing secret (`whsec_` + base64 of 32 bytes), issued or not.
            if let Some(i) = line.find("whsec_") {
                let tail: String = line[i + 6..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
                    .collect();
                assert!(
                    tail.len() < 20,
                    "{} holds a webhook secret: {line}",
                    path.display()
                );
            }
            // A JWT (Cognito's ID/access tokens) starts with the base64url of `{"`: `eyJ`.
            if let Some(i) = line.find("eyJ") {
                let tail: String = line[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect();
                assert!(
                    tail.len() < 40,
                    "{} holds something token-shaped: {line}",
                    path.display()
                );
            }
            assert!(
                !line.contains("mimiry_session=") && !line.contains("mimiry_refresh="),
                "{} holds a dashboard cookie: {line}",
                path.display()
            );
            assert!(
                !line.contains("local-secret"),
                "{} leaks the provider client secret",
                path.display()
            );
        }
    }
    assert!(
        logs >= 3 && lines > 0,
        "expected the stacks' logs in {}",
        dir.display()
    );
    println!(
        "log audit: {logs} logs, {lines} lines, {} secrets checked",
        secrets.len()
    );
}
