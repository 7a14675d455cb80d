//! What changed between two published versions of a journey: nodes added, removed and changed
//! (by id, their pinned plugin versions included), edges added and removed, the template
//! versions its sends pin, and its other fields (name, re-entry, goals).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::store::JourneyVersion;

fn by_id(definition: &Value) -> BTreeMap<String, Value> {
    definition["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|node| Some((node["id"].as_str()?.to_owned(), node.clone())))
        .collect()
}

fn edges(definition: &Value) -> Vec<Value> {
    definition["edges"].as_array().cloned().unwrap_or_default()
}

/// The changes from `before` to `after`.
pub fn diff(before: &JourneyVersion, after: &JourneyVersion) -> Value {
    let (old, new) = (by_id(&before.definition), by_id(&after.definition));
    let added: Vec<&Value> = new
        .iter()
        .filter(|(id, _)| !old.contains_key(*id))
        .map(|(_, node)| node)
        .collect();
    let removed: Vec<&Value> = old
        .iter()
        .filter(|(id, _)| !new.contains_key(*id))
        .map(|(_, node)| node)
        .collect();
    let changed: Vec<Value> = new
        .iter()
        .filter_map(|(id, node)| {
            let was = old.get(id)?;
            (was != node).then(|| json!({"id": id, "before": was, "after": node}))
        })
        .collect();
    let (old_edges, new_edges) = (edges(&before.definition), edges(&after.definition));
    let edges_added: Vec<&Value> = new_edges
        .iter()
        .filter(|e| !old_edges.contains(e))
        .collect();
    let edges_removed: Vec<&Value> = old_edges
        .iter()
        .filter(|e| !new_edges.contains(e))
        .collect();
    let mut templates = serde_json::Map::new();
    let names = before.templates.keys().chain(after.templates.keys());
    for name in names.collect::<std::collections::BTreeSet<_>>() {
        let (was, is) = (before.templates.get(name), after.templates.get(name));
        if was != is {
            templates.insert(name.clone(), json!({"before": was, "after": is}));
        }
    }
    let mut fields = serde_json::Map::new();
    let empty = serde_json::Map::new();
    let (old_fields, new_fields) = (
        before.definition.as_object().unwrap_or(&empty),
        after.definition.as_object().unwrap_or(&empty),
    );
    for key in old_fields.keys().chain(new_fields.keys()) {
        if key == "nodes" || key == "edges" || fields.contains_key(key) {
            continue;
        }
        let (was, is) = (old_fields.get(key), new_fields.get(key));
        if was != is {
            fields.insert(key.clone(), json!({"before": was, "after": is}));
        }
    }
    json!({
        "from": before.version,
        "to": after.version,
        "nodes": {"added": added, "removed": removed, "changed": changed},
        "edges": {"added": edges_added, "removed": edges_removed},
        "templates": templates,
        "fields": fields,
    })
}
