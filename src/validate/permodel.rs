//! Validation one model at a time: the same findings as the whole-document
//! path ([`super::Validator`]'s `validate_tree`), with a working set the
//! size of one model.
//!
//! Owns: the order of the steps when the `models:` mapping is walked once,
//! model after model in sorted-id order (the order `${PORT}` is numbered
//! in): each model is converted from the YAML tree to a small JSON value,
//! checked for unknown keys, `${env.…}`, its macros, expanded, checked for
//! unknown macros, against the schema and by its own semantic rules, then
//! dropped; only compact facts stay for the rules that span models (ids,
//! aliases, `filters.setParamsByID` keys, `unlisted`).
//!
//! Invariant: the findings (rule, path, position, message) and their order
//! are those of the whole-document path. Each finding is tagged with its
//! place in that path's emission order ([`Order`]: phase, then the rank of
//! the top-level key, the model in document or sorted order, the step);
//! findings of the phases the whole-document path would not have reached
//! (it stops at the first failing expansion step) are dropped, and the
//! final sort is by position, then that order. The one order this cannot
//! know, the JSON Schema library's between an error of the top level and
//! one of a model at the same position (only YAML merge keys can put two
//! values at one position), makes [`validate`] return `None`: the caller
//! then takes the whole-document path.

use std::mem;

use foldhash::{HashSet, HashSetExt};
use serde_json::{Map, Value};

use super::expand::{self, ModelContext};
use super::schema::Schema;
use super::semantic::{self, Names};
use super::{
    get, model_to_json, yaml, Finding, Order, Outcome, Positions, Report, Severity, Split,
};

/// Phases of the whole-document path, in its order.
const UNKNOWN_KEYS: u8 = 1;
const ENV: u8 = 2;
const MACROS: u8 = 3;
const START_PORT: u8 = 4;
const EXPAND: u8 = 5;
const MACRO_USES: u8 = 6;
const SCHEMA: u8 = 7;
const SEMANTIC: u8 = 8;
/// Past every phase: nothing stopped.
const ALL: u8 = u8::MAX;

/// Findings collected across steps; lent to a [`Report`] per step.
#[derive(Default)]
struct Sink {
    findings: Vec<Finding>,
    orders: Vec<Order>,
}

impl Sink {
    /// Run `f` with a report at `order`.
    fn at<R>(&mut self, pos: &Positions, order: Order, f: impl FnOnce(&mut Report) -> R) -> R {
        let mut r = Report {
            pos,
            findings: mem::take(&mut self.findings),
            orders: mem::take(&mut self.orders),
            order,
        };
        let out = f(&mut r);
        self.findings = r.findings;
        self.orders = r.orders;
        out
    }
}

/// What the rules spanning models keep of one model (document order).
#[derive(Default)]
struct Facts {
    param_keys: Vec<String>,
    unlisted: bool,
}

/// The models' aliases, in one buffer (no allocation per alias kept to
/// the end): (model in document order, index in its `aliases`, span).
#[derive(Default)]
struct AliasList {
    text: String,
    items: Vec<(u32, u32, u32, u32)>,
}

impl AliasList {
    /// The string items of `model`'s `aliases`, with their indexes.
    fn add(&mut self, doc: u32, model: &Value) {
        let Some(Value::Array(items)) = get(model, "aliases") else {
            return;
        };
        for (i, item) in items.iter().enumerate() {
            if let Some(a) = item.as_str() {
                let start = small(self.text.len());
                self.text.push_str(a);
                self.items
                    .push((doc, small(i), start, small(self.text.len())));
            }
        }
    }
}

fn small(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Validate a split document model by model. `None` when the order of
/// two schema errors needs the whole-document path.
pub(crate) fn validate(schema: &Schema, split: Split, pos: &mut Positions) -> Option<Outcome> {
    let Split {
        top,
        mut ids,
        mut nodes,
        slots,
        ranked,
    } = split;
    let mut sink = Sink::default();
    let models_raw_at = small(top.keys().position(|k| k == "models").unwrap_or(0));

    // The top level, raw: unknown keys, `${env.…}`, the global macros.
    for k in top.keys() {
        sink.at(pos, (UNKNOWN_KEYS, 0, 0, 0), |r| {
            semantic::unknown_top_key(k, r)
        });
    }
    for (t, (k, v)) in top.iter().enumerate() {
        sink.at(pos, (ENV, small(t), 0, 0), |r| {
            expand::warn_env_top(k, v, r)
        });
    }
    let globals = sink.at(pos, (MACROS, 0, 0, 0), |r| expand::global_macros(&top, r));
    let global_slugs = expand::slugs(&globals);
    let mut out = Map::new();
    for (k, mut v) in top {
        if k == "macros" {
            continue;
        }
        if k != "models" {
            expand::expand_top_value(&k, &mut v, &global_slugs);
        }
        out.insert(k, v);
    }
    let models_at = small(out.keys().position(|k| k == "models").unwrap_or(0));
    let start = sink.at(pos, (START_PORT, 0, 0, 0), |r| expand::start_port(&out, r));
    // Once expansion stops, the models are only read for the findings of
    // the phases before it.
    let mut expanding = start.is_some();
    let mut next_port = start.unwrap_or(0);
    let model_bools = expand::model_bool_fields();
    let mut facts: Vec<Facts> = Vec::with_capacity(ids.len());
    facts.resize_with(ids.len(), Facts::default);
    // Sized for one short alias per model up front: growing a buffer of
    // this size frees large blocks, which makes glibc consolidate every
    // small free block first (the per-model cost then grows with size).
    let mut aliases_of = AliasList {
        text: String::with_capacity(ids.len() * 16),
        items: Vec::with_capacity(ids.len()),
    };

    for (rank, &doc) in ranked.iter().enumerate() {
        let (doc, rank32) = (doc as usize, small(rank));
        let doc32 = small(doc);
        let (Some(id), Some(node), Some(&slot)) =
            (ids.get(doc), nodes.get_mut(doc), slots.get(doc))
        else {
            continue;
        };
        let node = mem::replace(node, yaml::Node::null());
        let mut value = model_to_json(node, slot, pos);
        sink.at(pos, (UNKNOWN_KEYS, 1, doc32, 0), |r| {
            semantic::unknown_model_keys(id, &value, r)
        });
        sink.at(pos, (ENV, models_raw_at, doc32, 0), |r| {
            expand::warn_env_model(id, &value, r)
        });
        let own = sink.at(pos, (MACROS, 1, doc32, 0), |r| {
            expand::model_macros_of(id, &value, r)
        });
        if !expanding {
            continue;
        }
        let uses_left = match &mut value {
            Value::Object(fields) => {
                let ctx = ModelContext {
                    globals: &globals,
                    global_slugs: &global_slugs,
                    own: own.as_ref(),
                    model_bools: &model_bools,
                };
                let done = sink.at(pos, (EXPAND, rank32, 0, 0), |r| {
                    expand::expand_model(id, fields, &ctx, &mut next_port, r)
                });
                match done {
                    Some(flag) => flag,
                    None => {
                        expanding = false;
                        continue;
                    }
                }
            }
            _ => false,
        };
        if uses_left {
            sink.at(pos, (MACRO_USES, models_at, doc32, 0), |r| {
                expand::check_macro_uses_model(id, &value, r)
            });
        }
        sink.at(pos, (SCHEMA, 1, doc32, 0), |r| {
            schema.check_model(id, &value, r)
        });
        sink.at(pos, (SEMANTIC, 3, rank32, 0), |r| {
            semantic::check_model_own(id, &value, r)
        });
        sink.at(pos, (SEMANTIC, 3, rank32, 2), |r| {
            semantic::check_model_link(id, &value, r)
        });
        let fact = &mut facts[doc];
        fact.unlisted = get(&value, "unlisted")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        fact.param_keys = get(&value, "filters")
            .and_then(|f| get(f, "setParamsByID"))
            .and_then(Value::as_object)
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default();
        aliases_of.add(doc32, &value);
    }
    drop(nodes);

    let mut expanded = Value::Object(out);
    if expanding {
        expand::coerce_bool_fields(&mut expanded, &expand::top_bool_fields());
        if let Value::Object(out) = &expanded {
            for (t, (k, v)) in out.iter().enumerate() {
                sink.at(pos, (MACRO_USES, small(t), 0, 0), |r| {
                    expand::check_macro_uses_top(k, v, r)
                });
            }
        }
    }
    // The phase the whole-document path stops after.
    let phase_has = |phase: u8, errors_only: bool| {
        sink.orders
            .iter()
            .zip(&sink.findings)
            .any(|(o, f)| o.0 == phase && (!errors_only || f.severity == Severity::Error))
    };
    let last = if phase_has(ENV, true) || phase_has(MACROS, true) {
        MACROS
    } else if phase_has(START_PORT, false) {
        START_PORT
    } else if phase_has(EXPAND, false) {
        EXPAND
    } else if phase_has(MACRO_USES, false) {
        MACRO_USES
    } else {
        ALL
    };
    let mut listed_models = Vec::new();
    if last == ALL {
        let empty = Map::new();
        let top = expanded.as_object().unwrap_or(&empty);
        let root_errors = sink.findings.len();
        sink.at(pos, (SCHEMA, 0, 0, 0), |r| schema.check(&expanded, r));
        if ties(&sink, root_errors) {
            return None;
        }
        {
            let idset: HashSet<&str> = {
                let mut set = HashSet::with_capacity(ids.len());
                set.extend(ids.iter().map(String::as_str));
                set
            };
            // Document order (models were read in sorted order; each one's
            // aliases are together, in order).
            aliases_of.items.sort_by_key(|item| item.0);
            let AliasList { text, items } = &aliases_of;
            let list = items.iter().filter_map(|&(doc, i, start, end)| {
                let id = ids.get(doc as usize)?;
                Some((
                    id.as_str(),
                    i as usize,
                    text.get(start as usize..end as usize)?,
                ))
            });
            let mut aliases = sink.at(pos, (SEMANTIC, 0, 0, 0), |r| {
                semantic::check_top(top, false, r);
                semantic::check_alias_list(list, ids.len(), r)
            });
            for (rank, &doc) in ranked.iter().enumerate() {
                let doc = doc as usize;
                let (Some(id), Some(fact)) = (ids.get(doc), facts.get(doc)) else {
                    continue;
                };
                if fact.param_keys.is_empty() {
                    continue;
                }
                sink.at(pos, (SEMANTIC, 3, small(rank), 1), |r| {
                    semantic::check_set_params_by_id(
                        id,
                        fact.param_keys.iter(),
                        &idset,
                        &mut aliases,
                        r,
                    )
                });
            }
            let names = Names {
                models: &idset,
                aliases: &aliases,
            };
            sink.at(pos, (SEMANTIC, 4, 0, 0), |r| {
                semantic::check_references(top, &names, r)
            });
        }
        // The ids are not needed any more: they become the list.
        listed_models = ranked
            .iter()
            .filter(|&&doc| !facts.get(doc as usize).is_some_and(|f| f.unlisted))
            .filter_map(|&doc| ids.get_mut(doc as usize).map(mem::take))
            .collect();
    }
    let mut tagged: Vec<(Order, Finding)> = sink
        .orders
        .into_iter()
        .zip(sink.findings)
        .filter(|(o, _)| o.0 <= last)
        .collect();
    let mut findings: Vec<Finding> = if last == ALL {
        tagged.sort_by(|(oa, a), (ob, b)| (a.line, a.column, oa).cmp(&(b.line, b.column, ob)));
        let mut findings: Vec<Finding> = tagged.into_iter().map(|(_, f)| f).collect();
        findings.dedup();
        findings
    } else {
        // A stopped expansion reports in the order found, as the whole-
        // document path does.
        tagged.sort_by_key(|(o, _)| *o);
        tagged.into_iter().map(|(_, f)| f).collect()
    };
    findings.shrink_to_fit();
    Some(Outcome {
        findings,
        listed_models,
    })
}

/// Whether a top-level schema error (those from `from` on) shares its
/// position with a model's schema error.
fn ties(sink: &Sink, from: usize) -> bool {
    let model_errors: HashSet<(usize, usize)> = sink
        .orders
        .iter()
        .zip(&sink.findings)
        .take(from)
        .filter(|(o, _)| o.0 == SCHEMA)
        .map(|(_, f)| (f.line, f.column))
        .collect();
    !model_errors.is_empty()
        && sink.findings[from..]
            .iter()
            .any(|f| model_errors.contains(&(f.line, f.column)))
}
