//! Assembles Gemini 3 streamed function arguments (`partialArgs`), which
//! arrive as values at JSON paths like `$.recipe.ingredients[0].name`, with
//! strings split across events.

use serde_json::{Map, Value};

#[derive(Debug, PartialEq)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Parses `$.a.b[0]["c d"]`; `None` for anything else.
fn parse(path: &str) -> Option<Vec<Seg<'_>>> {
    let mut rest = path.strip_prefix('$')?;
    let mut segs = Vec::new();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            let (key, tail) = r.split_at_checked(end)?;
            segs.push(Seg::Key(key));
            rest = tail;
        } else if let Some(r) = rest.strip_prefix("[\"") {
            let (key, tail) = r.split_once("\"]")?;
            segs.push(Seg::Key(key));
            rest = tail;
        } else if let Some(r) = rest.strip_prefix('[') {
            let (index, tail) = r.split_once(']')?;
            let i: usize = index.parse().ok()?;
            if i > 10_000 {
                return None;
            }
            segs.push(Seg::Index(i));
            rest = tail;
        } else {
            return None;
        }
    }
    Some(segs)
}

/// Sets (or, for strings, appends to) the value at `path` in `root`.
/// Returns false when the path is malformed.
pub fn apply(root: &mut Value, path: &str, value: Value) -> bool {
    let Some(segs) = parse(path) else {
        return false;
    };
    let mut cur = root;
    for seg in segs {
        cur = match seg {
            Seg::Key(k) => {
                if !cur.is_object() {
                    *cur = Value::Object(Map::new());
                }
                match cur {
                    Value::Object(m) => m.entry(k.to_string()).or_insert(Value::Null),
                    _ => return false,
                }
            }
            Seg::Index(i) => {
                if !cur.is_array() {
                    *cur = Value::Array(Vec::new());
                }
                match cur {
                    Value::Array(a) => {
                        if a.len() <= i {
                            a.resize(i.saturating_add(1), Value::Null);
                        }
                        match a.get_mut(i) {
                            Some(v) => v,
                            None => return false,
                        }
                    }
                    _ => return false,
                }
            }
        };
    }
    match (cur, value) {
        (Value::String(existing), Value::String(more)) => existing.push_str(&more),
        (slot, v) => *slot = v,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_nested_values_and_concatenates_strings() {
        let mut v = Value::Null;
        assert!(apply(&mut v, "$.recipe.ingredients[0].name", json!("Lasa")));
        assert!(apply(&mut v, "$.recipe.ingredients[0].name", json!("gna")));
        assert!(apply(&mut v, "$.recipe.ingredients[1].amount", json!(2.0)));
        assert!(apply(&mut v, "$[\"odd key\"]", json!(true)));
        assert_eq!(
            v,
            json!({"recipe": {"ingredients": [{"name": "Lasagna"}, {"amount": 2.0}]},
                   "odd key": true})
        );
        assert!(!apply(&mut v, "recipe", json!(1)));
        assert!(!apply(&mut v, "$[99999999]", json!(1)));
    }
}
