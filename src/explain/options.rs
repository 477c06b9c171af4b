//! Method settings from JSON: a method's config (serde, defaults = the paper's) overridden key
//! by key, with errors that name the unknown key and list the known ones.

use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Serialize};

/// Applies `overrides` (a JSON object, or null for none) on top of `base`. `aliases` maps a
/// convenience key to the keys it sets (M2IB's `layer` sets both towers' layers).
pub fn merge<T: Serialize + DeserializeOwned>(
    base: &T,
    overrides: &serde_json::Value,
    method: &str,
    aliases: &[(&str, &[&str])],
) -> Result<T> {
    let obj = match overrides {
        serde_json::Value::Null => return Ok(serde_json::from_value(serde_json::to_value(base)?)?),
        serde_json::Value::Object(o) => o,
        _ => return Err(Error::invalid(format!("{method} options must be a JSON object"))),
    };
    let mut value = serde_json::to_value(base)?;
    let map = value.as_object_mut().ok_or_else(|| Error::invalid("settings are not a JSON object"))?;
    let mut known: Vec<String> = aliases.iter().map(|(k, _)| k.to_string()).collect();
    known.extend(map.keys().cloned());
    for (k, v) in obj {
        if let Some((_, targets)) = aliases.iter().find(|(a, _)| a == k) {
            for t in *targets {
                map.insert(t.to_string(), v.clone());
            }
        } else if map.contains_key(k) {
            map.insert(k.clone(), v.clone());
        } else {
            return Err(Error::invalid(format!("unknown {method} option '{k}' (known options: {})", known.join(", "))));
        }
    }
    serde_json::from_value(value).map_err(|e| {
        // Name the offending key: the first one that fails alone over the defaults.
        let culprit = obj.iter().find(|(k, v)| {
            let mut alone = serde_json::to_value(base).unwrap_or_default();
            let targets: Vec<String> = match aliases.iter().find(|(a, _)| a == k) {
                Some((_, t)) => t.iter().map(|t| t.to_string()).collect(),
                None => vec![k.to_string()],
            };
            for t in targets {
                alone[t] = (*v).clone();
            }
            serde_json::from_value::<T>(alone).is_err()
        });
        match culprit {
            Some((k, v)) => Error::invalid(format!("{method} option '{k}' = {v}: {e}")),
            None => Error::invalid(format!("{method} option: {e}")),
        }
    })
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::invalid(format!("settings: {e}"))
    }
}
