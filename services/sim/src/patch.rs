//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the field ownership behind
//! server-side apply.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, everything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {pointer:?}"))?;
    Ok(rest.split('/').map(unescape).collect())
}

fn parent_mut<'a>(
    doc: &'a mut Value,
    toks: &[String],
    pointer: &str,
) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("path {pointer:?} does not exist"))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, pointer: &str, value: Value) -> Result<(), String> {
    let toks = tokens(pointer)?;
    let Some((last, parents)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parents, pointer)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let index = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| format!("index {last:?} out of bounds at {pointer:?}"))?
            };
            a.insert(index, value);
            Ok(())
        }
        _ => Err(format!(
            "cannot add at {pointer:?}: parent is not a container"
        )),
    }
}

fn remove(doc: &mut Value, pointer: &str) -> Result<Value, String> {
    let toks = tokens(pointer)?;
    let (last, parents) = toks
        .split_last()
        .ok_or_else(|| "cannot remove the whole document".to_owned())?;
    match parent_mut(doc, parents, pointer)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("path {pointer:?} does not exist")),
        Value::Array(a) => {
            let i = last
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(|| format!("index {last:?} out of bounds at {pointer:?}"))?;
            Ok(a.remove(i))
        }
        _ => Err(format!("path {pointer:?} does not exist")),
    }
}

fn get<'a>(doc: &'a Value, pointer: &str) -> Result<&'a Value, String> {
    doc.pointer(pointer)
        .ok_or_else(|| format!("path {pointer:?} does not exist"))
}

/// RFC 6902 over `doc`; on error `doc` is left unchanged.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or_else(|| "a JSON patch must be an array of operations".to_owned())?;
    let mut work = doc.clone();
    for (i, op) in ops.iter().enumerate() {
        let field = |name: &str| {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("operation {i}: missing {name:?}"))
        };
        let path = field("path")?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| format!("operation {i}: missing \"value\""))
        };
        match field("op")? {
            "add" => add(&mut work, path, value()?)?,
            "remove" => {
                remove(&mut work, path)?;
            }
            "replace" => {
                remove(&mut work, path)?;
                add(&mut work, path, value()?)?;
            }
            "move" => {
                let from = field("from")?;
                let v = remove(&mut work, from)?;
                add(&mut work, path, v)?;
            }
            "copy" => {
                let v = get(&work, field("from")?)?.clone();
                add(&mut work, path, v)?;
            }
            "test" => {
                if *get(&work, path)? != value()? {
                    return Err(format!("test operation {i} failed at {path:?}"));
                }
            }
            other => return Err(format!("operation {i}: unknown op {other:?}")),
        }
    }
    *doc = work;
    Ok(())
}

/// Leaf field paths (`.spec.predictor.minReplicas`) of an object, as field ownership sees
/// them: lists are atomic; identity, status and bookkeeping fields are not owned.
pub fn field_paths(object: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    walk(&format!("{prefix}.{k}"), child, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Some(m) = object.as_object() {
        for (k, v) in m {
            match k.as_str() {
                "apiVersion" | "kind" | "status" => {}
                "metadata" => {
                    for owned in ["labels", "annotations"] {
                        if let Some(child) = v.get(owned) {
                            walk(&format!(".metadata.{owned}"), child, &mut out);
                        }
                    }
                }
                _ => walk(&format!(".{k}"), v, &mut out),
            }
        }
    }
    out
}

/// The `fieldsV1` document of a set of owned paths.
pub fn fields_v1(paths: &[&String]) -> Value {
    let mut root = Value::Object(Map::new());
    for path in paths {
        let mut cur = &mut root;
        for seg in path.trim_start_matches('.').split('.') {
            cur = cur
                .as_object_mut()
                .expect("object")
                .entry(format!("f:{seg}"))
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut doc, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(doc, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn patch_ops() {
        let mut doc = json!({"spec": {"containers": [{"name": "c", "image": "a"}]}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "test", "path": "/spec/containers/0/image", "value": "a"},
                {"op": "replace", "path": "/spec/containers/0/image", "value": "b"},
                {"op": "add", "path": "/spec/replicas", "value": 2}
            ]),
        )
        .unwrap();
        assert_eq!(doc["spec"]["containers"][0]["image"], "b");
        assert_eq!(doc["spec"]["replicas"], 2);
        let before = doc.clone();
        assert!(json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert_eq!(doc, before);
    }

    #[test]
    fn paths() {
        let p = field_paths(
            &json!({"metadata": {"name": "x", "labels": {"a": "1"}}, "spec": {"r": 1, "l": [1]}, "status": {}}),
        );
        assert_eq!(
            p.keys().cloned().collect::<Vec<_>>(),
            vec![".metadata.labels.a", ".spec.l", ".spec.r"]
        );
    }
}
