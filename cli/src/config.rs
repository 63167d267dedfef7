//! Where the API is and which key to use: `MIMIRY_API_URL` / `--api-url` and `MIMIRY_API_KEY`
//! first, then the config file (`$MIMIRY_CONFIG`, else `~/.config/mimiry/config.toml`).

use crate::api::CliError;
use serde::Deserialize;
use std::path::PathBuf;

/// The base URL of the user guide.
pub const DEFAULT_API_URL: &str =
    "https://ypoycmbljujlkmjuhfif.supabase.co/functions/v1/public-api";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub api_key: Option<String>,
    pub api_url: Option<String>,
}

pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MIMIRY_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("mimiry").join("config.toml"))
}

pub fn load() -> Result<ConfigFile, CliError> {
    let Some(path) = config_path() else {
        return Ok(ConfigFile::default());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(source) => Err(CliError::File {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The base URL and key to call the API with.
pub fn resolve(api_url: Option<String>) -> Result<(String, String), CliError> {
    let file = load()?;
    let url = api_url
        .or(file.api_url)
        .unwrap_or_else(|| DEFAULT_API_URL.to_string());
    let key = std::env::var("MIMIRY_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())
        .or(file.api_key)
        .ok_or_else(|| {
            CliError::Usage(format!(
                "no API key: set MIMIRY_API_KEY, or api_key in {}",
                config_path().map_or("~/.config/mimiry/config.toml".into(), |p| p
                    .display()
                    .to_string())
            ))
        })?;
    Ok((url, key.trim().to_string()))
}
