//! Field tables: one declarative description per API resource (issue 13 §2).
//!
//! A resource's [`Table`] lists its attributes once: the key, how a body's value is read
//! (type, bounds, allow-list: the reader), how it is stored on the model object (the setter,
//! which also holds the default: `null`, and on create an absent attribute, stores `None`),
//! whether PUT may change it, and how it is rendered. POST and PUT bodies, the accepted key
//! lists (so a misspelled key is a 400, never silently absent) and the rendered object (hence
//! the list sort and filter keys) all come from it.
//!
//! **Order.** Attributes are read in table order and the first bad one answers, so the order
//! is part of the API's replies. On create, attributes marked [`Attr::first`] are read first,
//! then the common ones (`name`, `description`, `admin_state_up`, `tags`), then the rest; on
//! update, plain table order. (This is the order the hand-written parsers had; the golden test
//! `crates/api/tests/golden.rs` pins it.)

use klb_model::LoadBalancer;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::ApiConfig;
use crate::body::{Field, Obj, required};
use crate::error::{ApiError, ApiResult};

/// Reads an attribute from a body: absent, `null`, or a checked value.
pub type Reader<V> = std::sync::Arc<dyn Fn(&Obj<'_>, &str) -> ApiResult<Field<V>> + Send + Sync>;

type Check = Box<dyn Fn(&Obj<'_>, &str) -> ApiResult<()> + Send + Sync>;

type Apply<T> = Box<dyn Fn(&Obj<'_>, &Attr<T>, &mut T, &Ctx<'_>) -> ApiResult<()> + Send + Sync>;

type Render<T> = Box<dyn Fn(&T) -> Value + Send + Sync>;

/// A configuration record stored as its JSON body (the admin resources: quotas, flavors,
/// availability zones and their profiles have no model type), described by a
/// `Table<Body>` of [`Attr::stored`] attributes.
pub type Body = Map<String, Value>;

/// What a setter may return: nothing, or a check's result.
pub trait SetResult {
    /// As a result.
    fn into_result(self) -> ApiResult<()>;
}

impl SetResult for () {
    fn into_result(self) -> ApiResult<()> {
        Ok(())
    }
}

impl SetResult for ApiResult<()> {
    fn into_result(self) -> ApiResult<()> {
        self
    }
}

/// What setters may look at besides the value.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The API's configuration (defaults of timeouts and ciphers).
    pub config: &'a ApiConfig,
    /// The load balancer of the object, where the setter needs it.
    pub lb: Option<&'a LoadBalancer>,
    /// PUT (absent attributes are left alone) rather than POST.
    pub updating: bool,
}

/// One attribute of a resource.
pub struct Attr<T> {
    key: &'static str,
    create: bool,
    update: bool,
    required: bool,
    first: bool,
    not_null: bool,
    apply: Option<Apply<T>>,
    check: Option<Check>,
    render: Option<Render<T>>,
}

impl<T: 'static> Attr<T> {
    /// An attribute accepted on create, read by `read` and stored by `set` (`None` for `null`
    /// and, on create, for absent), rendered by `render`.
    pub fn new<V: 'static, R: SetResult>(
        key: &'static str,
        read: Reader<V>,
        set: impl Fn(&mut T, Option<V>, &Ctx<'_>) -> R + Send + Sync + 'static,
        render: impl Fn(&T) -> Value + Send + Sync + 'static,
    ) -> Self {
        // Shared by the apply and check-only paths.
        let reader = read.clone();
        let check = move |obj: &Obj<'_>, key: &str| reader(obj, key).map(|_| ());
        let apply =
            move |obj: &Obj<'_>, a: &Attr<T>, t: &mut T, c: &Ctx<'_>| match read(obj, a.key)? {
                Field::Set(v) => set(t, Some(v), c).into_result(),
                Field::Absent if c.updating => Ok(()),
                Field::Null if c.updating && a.not_null => {
                    Err(ApiError::invalid_option("None", a.key))
                }
                _ if a.required && !c.updating => required::<()>(a.key, Field::Null),
                _ => set(t, None, c).into_result(),
            };
        Attr {
            key,
            create: true,
            update: false,
            required: false,
            first: false,
            not_null: false,
            apply: Some(Box::new(apply)),
            check: Some(Box::new(check)),
            render: Some(Box::new(render)),
        }
    }

    /// A key accepted on create whose value the handler reads itself (a parent id, the
    /// project, an attribute read together with others); not rendered.
    pub fn key(key: &'static str) -> Self {
        Attr {
            key,
            create: true,
            update: false,
            required: false,
            first: false,
            not_null: false,
            apply: None,
            check: None,
            render: None,
        }
    }

    /// A rendered attribute that no body sets (relations, derived values).
    pub fn shown(key: &'static str, render: impl Fn(&T) -> Value + Send + Sync + 'static) -> Self {
        Attr {
            render: Some(Box::new(render)),
            create: false,
            ..Attr::key(key)
        }
    }

    /// PUT may change it too.
    pub fn updatable(mut self) -> Self {
        self.update = true;
        self
    }

    /// Create fails with `Mandatory field missing.` when it is absent or `null`.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// PUT refuses `null` (`None is not a valid option for <key>`) instead of clearing it.
    pub fn not_null(mut self) -> Self {
        self.not_null = true;
        self
    }

    /// Read before the others on create.
    pub fn first(mut self) -> Self {
        self.first = true;
        self
    }

    /// Rendered by `render` (for a [`Attr::key`] read by the handler).
    pub fn rendered(mut self, render: impl Fn(&T) -> Value + Send + Sync + 'static) -> Self {
        self.render = Some(Box::new(render));
        self
    }

    /// Not rendered by the table (the common head renders it).
    pub fn unrendered(mut self) -> Self {
        self.render = None;
        self
    }

    fn is_common(&self) -> bool {
        matches!(self.key, "name" | "description" | "admin_state_up" | "tags")
    }

    fn apply(&self, obj: &Obj<'_>, t: &mut T, c: &Ctx<'_>) -> ApiResult<()> {
        match &self.apply {
            Some(apply) => apply(obj, self, t, c),
            None => Ok(()),
        }
    }
}

impl Attr<Body> {
    /// An attribute of a stored body: read by `read`, stored under its key as JSON (`null`
    /// for `null` and, on create, for absent), rendered as stored.
    pub fn stored<V: Serialize + 'static>(key: &'static str, read: Reader<V>) -> Self {
        Attr::stored_or(key, read, Value::Null)
    }

    /// [`Attr::stored`] with `default` stored for `null` and, on create, for absent.
    pub fn stored_or<V: Serialize + 'static>(
        key: &'static str,
        read: Reader<V>,
        default: Value,
    ) -> Self {
        Attr::stored_as(key, key, read, default)
    }

    /// [`Attr::stored_or`] under another key: a deprecated spelling of `stored_key`
    /// (rendered with its value).
    pub fn stored_as<V: Serialize + 'static>(
        key: &'static str,
        stored_key: &'static str,
        read: Reader<V>,
        default: Value,
    ) -> Self {
        Attr::new(
            key,
            read,
            move |m: &mut Body, v: Option<V>, _: &Ctx<'_>| {
                let v = v.map_or_else(|| default.clone(), |v| serde_json::json!(v));
                m.insert(stored_key.to_owned(), v);
            },
            move |m: &Body| m.get(stored_key).cloned().unwrap_or(Value::Null),
        )
    }

    /// A stored attribute that no body sets (an id the handler assigns).
    pub fn kept(key: &'static str) -> Self {
        Attr::shown(key, move |m: &Body| {
            m.get(key).cloned().unwrap_or(Value::Null)
        })
    }
}

/// A resource's attributes, in the order they are read.
pub struct Table<T> {
    attrs: Vec<Attr<T>>,
    create_keys: Vec<&'static str>,
    update_keys: Vec<&'static str>,
    create_order: Vec<usize>,
}

impl<T: 'static> Table<T> {
    /// The table of `attrs` (in update order; see the module doc for the create order).
    pub fn new(attrs: Vec<Attr<T>>) -> Self {
        let create_keys = attrs.iter().filter(|a| a.create).map(|a| a.key).collect();
        let update_keys = attrs.iter().filter(|a| a.update).map(|a| a.key).collect();
        let rank = |a: &Attr<T>| {
            if a.first {
                0
            } else if a.is_common() {
                1
            } else {
                2
            }
        };
        let mut create_order: Vec<usize> = (0..attrs.len()).filter(|i| attrs[*i].create).collect();
        create_order.sort_by_key(|i| rank(&attrs[*i]));
        Table {
            attrs,
            create_keys,
            update_keys,
            create_order,
        }
    }

    /// Keys a POST body may hold.
    pub fn create_keys(&self) -> &[&'static str] {
        &self.create_keys
    }

    /// Keys a POST body must hold (absent or `null`: `Mandatory field missing.`).
    pub fn required_keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.attrs.iter().filter(|a| a.required).map(|a| a.key)
    }

    /// Keys a PUT body may hold.
    pub fn update_keys(&self) -> &[&'static str] {
        &self.update_keys
    }

    /// Fills `t` from a POST body: every attribute the body lacks gets its default.
    pub fn create(
        &self,
        obj: &Obj<'_>,
        t: &mut T,
        config: &ApiConfig,
        lb: Option<&LoadBalancer>,
    ) -> ApiResult<()> {
        let c = Ctx {
            config,
            lb,
            updating: false,
        };
        apply_all(
            self.create_order.iter().map(|i| &self.attrs[*i]),
            obj,
            t,
            &c,
        )
    }

    /// Reads a PUT body without applying it, so a bad body is answered before the object is
    /// looked up ([`Table::update`] then reads it again).
    pub fn check_update(&self, obj: &Obj<'_>) -> ApiResult<()> {
        for a in self.attrs.iter().filter(|a| a.update) {
            if let Some(check) = &a.check {
                check(obj, a.key)?;
            }
        }
        Ok(())
    }

    /// Applies a PUT body to `t`: attributes the body lacks are left as they are.
    pub fn update(
        &self,
        obj: &Obj<'_>,
        t: &mut T,
        config: &ApiConfig,
        lb: Option<&LoadBalancer>,
    ) -> ApiResult<()> {
        let c = Ctx {
            config,
            lb,
            updating: true,
        };
        apply_all(self.attrs.iter().filter(|a| a.update), obj, t, &c)
    }

    /// The changes of a PUT body, as a fresh object holding only what the body sets: every
    /// attribute is read (type and bounds) before any `null` is refused ([`Attr::not_null`]),
    /// the order of the admin resources' hand-written parsers.
    pub fn patch(&self, obj: &Obj<'_>, config: &ApiConfig) -> ApiResult<T>
    where
        T: Default,
    {
        self.check_update(obj)?;
        let mut t = T::default();
        self.update(obj, &mut t, config, None)?;
        Ok(t)
    }

    /// Adds the rendered attributes to `m`.
    pub fn render(&self, t: &T, m: &mut Map<String, Value>) {
        for a in &self.attrs {
            if let Some(render) = &a.render {
                m.insert(a.key.to_owned(), render(t));
            }
        }
    }
}

/// Reads and stores `attrs` in order; the first bad one answers.
fn apply_all<'a, T: 'static>(
    attrs: impl Iterator<Item = &'a Attr<T>>,
    obj: &Obj<'_>,
    t: &mut T,
    c: &Ctx<'_>,
) -> ApiResult<()> {
    for a in attrs {
        a.apply(obj, t, c)?;
    }
    Ok(())
}

/// One of the attributes most v2 resources share, for a model type with the field of the same
/// name: `common_attr!(Pool, name)`. `name` and `description` are free text (`null` clears),
/// `admin_state_up` defaults to true, `tags` is rendered by the common head; all updatable.
macro_rules! common_attr {
    ($t:ty, name) => {
        $crate::v2::fields::Attr::<$t>::new(
            "name",
            $crate::v2::fields::read::text(),
            |o, v, _| o.name = v,
            |o| serde_json::json!(o.name),
        )
        .updatable()
    };
    ($t:ty, description) => {
        $crate::v2::fields::Attr::<$t>::new(
            "description",
            $crate::v2::fields::read::text(),
            |o, v, _| o.description = v,
            |o| serde_json::json!(o.description),
        )
        .updatable()
    };
    ($t:ty, admin_state_up) => {
        $crate::v2::fields::Attr::<$t>::new(
            "admin_state_up",
            $crate::v2::fields::read::admin(),
            |o, v, _| o.admin_state_up = v.unwrap_or(true),
            |o| serde_json::json!(o.admin_state_up),
        )
        .updatable()
    };
    ($t:ty, tags) => {
        $crate::v2::fields::Attr::<$t>::new(
            "tags",
            $crate::v2::fields::read::tags(),
            |o, v, _| o.tags = v.unwrap_or_default(),
            |_| serde_json::Value::Null,
        )
        .updatable()
        .unrendered()
    };
}
pub(crate) use common_attr;

/// Readers, one per kind of value ([`Obj`]'s typed getters with their bounds).
pub mod read {
    use std::collections::BTreeMap;
    use std::net::IpAddr;
    use std::str::FromStr;
    use std::sync::Arc;

    use klb_model::validate;
    use uuid::Uuid;

    use super::Reader;
    use crate::body::{Field, Obj};

    /// Free text: a name or description.
    pub fn text() -> Reader<String> {
        Arc::new(|o: &Obj<'_>, k: &str| o.text(k, validate::MAX_STR))
    }

    /// `tags`.
    pub fn tags() -> Reader<Vec<String>> {
        Arc::new(|o: &Obj<'_>, k: &str| {
            let max = validate::MAX_STR;
            o.string_list(k, max, |s| validate::free_text(s, max))
        })
    }

    /// `admin_state_up`: a boolean where `null` means false.
    pub fn admin() -> Reader<bool> {
        Arc::new(|o: &Obj<'_>, k: &str| o.bool_null_false(k))
    }

    /// A boolean.
    pub fn boolean() -> Reader<bool> {
        Arc::new(|o: &Obj<'_>, k: &str| o.bool(k))
    }

    /// An integer in `[min, max]`.
    pub fn int(min: i64, max: i64) -> Reader<i64> {
        Arc::new(move |o: &Obj<'_>, k: &str| o.int(k, min, max))
    }

    /// A UUID.
    pub fn uuid() -> Reader<Uuid> {
        Arc::new(|o: &Obj<'_>, k: &str| o.uuid(k))
    }

    /// An IP address.
    pub fn ip() -> Reader<IpAddr> {
        Arc::new(|o: &Obj<'_>, k: &str| o.ip(k))
    }

    /// A string of at most `max` characters without further checks.
    pub fn string(max: usize) -> Reader<String> {
        Arc::new(move |o: &Obj<'_>, k: &str| o.string(k, max))
    }

    /// A string of at most `max` characters that passes `check`.
    pub fn checked<E: std::fmt::Display + 'static>(
        max: usize,
        check: fn(&str) -> Result<(), E>,
    ) -> Reader<String> {
        Arc::new(move |o: &Obj<'_>, k: &str| o.checked(k, max, check))
    }

    /// A list of UUIDs.
    pub fn uuids() -> Reader<Vec<Uuid>> {
        Arc::new(|o: &Obj<'_>, k: &str| o.uuid_list(k))
    }

    /// A list of strings, each of at most `max` characters and passing `check`.
    pub fn strings<E: std::fmt::Display + 'static>(
        max: usize,
        check: fn(&str) -> Result<(), E>,
    ) -> Reader<Vec<String>> {
        Arc::new(move |o: &Obj<'_>, k: &str| o.string_list(k, max, check))
    }

    /// A string → string map.
    pub fn string_map(max: usize) -> Reader<BTreeMap<String, String>> {
        Arc::new(move |o: &Obj<'_>, k: &str| o.string_map(k, max))
    }

    /// One of an enum's spellings.
    pub fn one_of<E>(all: &'static [E]) -> Reader<E>
    where
        E: FromStr + std::fmt::Display + Clone + Send + Sync + 'static,
    {
        Arc::new(move |o: &Obj<'_>, k: &str| o.enumerated(k, all))
    }

    /// A list of an enum's spellings.
    pub fn list_of<E>(all: &'static [E]) -> Reader<Vec<E>>
    where
        E: FromStr + std::fmt::Display + Clone + Send + Sync + 'static,
    {
        Arc::new(move |o: &Obj<'_>, k: &str| o.enum_list(k, all))
    }

    /// A list that, when given, must not be empty.
    pub fn nonempty<E: 'static>(read: Reader<Vec<E>>) -> Reader<Vec<E>> {
        then(read, |k: &str, v: &Vec<E>| {
            if v.is_empty() {
                return Err(crate::error::ApiError::invalid(
                    k,
                    &serde_json::json!([]),
                    "Value should not be an empty list",
                ));
            }
            Ok(())
        })
    }

    /// `read`, then `check` on a value that was given.
    pub fn then<V: 'static>(
        read: Reader<V>,
        check: impl Fn(&str, &V) -> crate::error::ApiResult<()> + Send + Sync + 'static,
    ) -> Reader<V> {
        Arc::new(move |o: &Obj<'_>, k: &str| {
            let f = read(o, k)?;
            if let Field::Set(v) = &f {
                check(k, v)?;
            }
            Ok(f)
        })
    }
}
