//! Single-call creation of a fully populated load balancer (octavia-api.md §1.2): listeners
//! with default pools and L7 policies/rules, pools with health monitors and members. Pools are
//! matched by name.

use klb_model::*;
use klb_store::WriteTx;
use serde_json::{Value, json};

use crate::AppState;
use crate::body::{Field, Obj};
use crate::error::{ApiError, ApiResult};

/// The objects of one graph, ready to insert.
#[derive(Default)]
pub struct Graph {
    listeners: Vec<Listener>,
    policies: Vec<L7Policy>,
    rules: Vec<L7Rule>,
    pools: Vec<Pool>,
    monitors: Vec<HealthMonitor>,
    members: Vec<Member>,
}

fn without<'a>(keys: &[&'a str], drop: &[&str], add: &[&'a str]) -> Vec<&'a str> {
    keys.iter()
        .copied()
        .filter(|k| !drop.contains(k))
        .chain(add.iter().copied())
        .collect()
}

/// Validates the graph parts of a load balancer POST.
pub fn build(
    state: &AppState,
    lb: &LoadBalancer,
    listeners: &[Obj<'_>],
    pools: &[Obj<'_>],
) -> ApiResult<Graph> {
    let mut g = Graph::default();
    if listeners.is_empty() && pools.is_empty() {
        return Ok(g);
    }
    // Every full pool definition: top-level ones and those nested in listeners/policies.
    let mut defs: Vec<Obj<'_>> = pools.to_vec();
    let is_ref = |o: &Obj<'_>| o.only("", &["name"]).is_ok();
    for l in listeners {
        if let Field::Set(p) = l.object("default_pool")?
            && !is_ref(&p)
        {
            defs.push(p);
        }
        if let Field::Set(ps) = l.objects("l7policies")? {
            for p in ps {
                if let Field::Set(rp) = p.object("redirect_pool")?
                    && !is_ref(&rp)
                {
                    defs.push(rp);
                }
            }
        }
    }
    let pool_keys = without(
        super::pools::post_keys(),
        &["listener_id", "loadbalancer_id", "project_id", "tenant_id"],
        &["healthmonitor", "members"],
    );
    let mut names: Vec<String> = Vec::new();
    for def in &defs {
        def.only("pool", &pool_keys)?;
        let name = def.string("name", 255)?.opt().ok_or_else(|| {
            ApiError::BadRequest(
                "Pools must be named when creating a fully populated loadbalancer.".to_owned(),
            )
        })?;
        if names.contains(&name) {
            return Err(ApiError::BadRequest(
                "Pool names must be unique when creating a fully populated loadbalancer."
                    .to_owned(),
            ));
        }
        for attr in super::pools::required_keys() {
            if def.raw(attr).is_none_or(|v| v.is_null()) {
                return Err(ApiError::BadRequest(format!(
                    "Pool definition for '{}' missing required attribute: {attr}",
                    validate::printable(&name)
                )));
            }
        }
        let mut pool = super::pools::parse_new(state, def, lb)?;
        pool.project_id = lb.project_id.clone();
        if let Field::Set(hm) = def.object("healthmonitor")? {
            hm.only(
                "healthmonitor",
                &without(
                    super::healthmonitors::post_keys(),
                    &["pool_id", "project_id", "tenant_id"],
                    &[],
                ),
            )?;
            g.monitors
                .push(super::healthmonitors::parse_new(state, &hm, &pool)?);
        }
        let has_monitor = g.monitors.iter().any(|h| h.pool_id == pool.id);
        for m in def.objects("members")?.opt().unwrap_or_default() {
            m.only(
                "members",
                &without(
                    super::members::post_keys(),
                    &["project_id", "tenant_id"],
                    &[],
                ),
            )?;
            let member = super::members::parse_new(state, &m, &pool, has_monitor)?;
            if g.members.iter().any(|o| {
                o.pool_id == pool.id
                    && o.address == member.address
                    && o.protocol_port == member.protocol_port
            }) {
                return Err(ApiError::Conflict(format!(
                    "Another member on this pool is already using ip {} on protocol_port {}",
                    member.address, member.protocol_port
                )));
            }
            g.members.push(member);
        }
        names.push(name);
        g.pools.push(pool);
    }
    let resolve = |o: &Obj<'_>| -> ApiResult<usize> {
        let name = o.string("name", 255)?.opt().unwrap_or_default();
        names.iter().position(|n| *n == name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Pool '{}' was referenced but no full definition was found.",
                validate::printable(&name)
            ))
        })
    };
    let listener_keys = without(
        super::listeners::post_keys(),
        &[
            "loadbalancer_id",
            "project_id",
            "tenant_id",
            "default_pool_id",
        ],
        &["default_pool", "l7policies"],
    );
    // A nested policy's own attributes are its table's, less what nesting implies; it may
    // also hold its redirect pool (by name) and its rules.
    let policy_own_keys = without(
        super::l7policies::post_keys(),
        &["listener_id", "project_id", "tenant_id", "redirect_pool_id"],
        &[],
    );
    let policy_keys = without(&policy_own_keys, &[], &["redirect_pool", "rules"]);
    for lo in listeners {
        lo.only("listener", &listener_keys)?;
        let mut l = super::listeners::parse_new(state, lo, lb, &lb.project_id)?;
        super::listeners::check_duplicate(&g.listeners, &l)?;
        if let Field::Set(dp) = lo.object("default_pool")? {
            let pool = &g.pools[resolve(&dp)?];
            super::listeners::check_protocols(l.protocol, pool.protocol)?;
            l.default_pool_id = Some(pool.id);
        }
        for (i, po) in lo
            .objects("l7policies")?
            .opt()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            po.only("l7policies", &policy_keys)?;
            // `redirect_pool` (by name) becomes `redirect_pool_id` below.
            let mut body = serde_json::Map::new();
            for key in &policy_own_keys {
                if let Some(v) = po.raw(key) {
                    body.insert((*key).to_owned(), v.clone());
                }
            }
            let redirect_pool = match po.object("redirect_pool")? {
                Field::Set(rp) => Some(g.pools[resolve(&rp)?].id),
                _ => None,
            };
            if let Some(id) = redirect_pool {
                body.insert("redirect_pool_id".into(), json!(id));
            }
            let policy =
                super::l7policies::parse_single(state, &Obj::new(&body), &l, lb, i as i64 + 1)?;
            if let Some(pid) = policy.redirect_pool_id
                && let Some(p) = g.pools.iter().find(|p| p.id == pid)
            {
                super::listeners::check_protocols(l.protocol, p.protocol)?;
            }
            let rules = po.objects("rules")?.opt().unwrap_or_default();
            if rules.len() > validate::MAX_L7_RULES_PER_POLICY {
                return Err(ApiError::Conflict(format!(
                    "Too many rules on L7 policy {}",
                    policy.id
                )));
            }
            for ro in rules {
                ro.only(
                    "rules",
                    &without(
                        super::l7rules::post_keys(),
                        &["project_id", "tenant_id"],
                        &[],
                    ),
                )?;
                g.rules
                    .push(super::l7rules::parse_new(state, &ro, &policy)?);
            }
            g.policies.push(policy);
        }
        g.listeners.push(l);
    }
    Ok(g)
}

impl Graph {
    /// True when the POST had no listeners or pools.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty() && self.pools.is_empty()
    }

    /// Certificate checks for every listener and pool in the graph (before the write lock:
    /// fetching certificates may be slow).
    pub async fn check_certs(&self, state: &AppState) -> ApiResult<()> {
        for l in &self.listeners {
            super::common::check_certs(state, &l.project_id, &super::listeners::cert_refs(l))
                .await?;
        }
        for p in &self.pools {
            super::common::check_certs(state, &p.project_id, &super::pools::cert_refs(p)).await?;
        }
        Ok(())
    }

    /// Quota checks for every kind in the graph.
    pub async fn check_quotas(
        &self,
        state: &AppState,
        tx: &mut WriteTx,
        project_id: &str,
    ) -> ApiResult<()> {
        use super::common::check_quota;
        check_quota(
            state,
            tx,
            project_id,
            Kind::Listener,
            self.listeners.len() as i64,
        )
        .await?;
        check_quota(state, tx, project_id, Kind::Pool, self.pools.len() as i64).await?;
        check_quota(
            state,
            tx,
            project_id,
            Kind::HealthMonitor,
            self.monitors.len() as i64,
        )
        .await?;
        check_quota(
            state,
            tx,
            project_id,
            Kind::Member,
            self.members.len() as i64,
        )
        .await?;
        check_quota(
            state,
            tx,
            project_id,
            Kind::L7Policy,
            self.policies.len() as i64,
        )
        .await?;
        check_quota(state, tx, project_id, Kind::L7Rule, self.rules.len() as i64).await
    }

    /// Inserts everything (inside the LB's creation transaction).
    pub async fn insert(&self, tx: &mut WriteTx) -> ApiResult<()> {
        for p in &self.pools {
            tx.insert_resource(p).await?;
        }
        for h in &self.monitors {
            tx.insert_resource(h).await?;
        }
        for m in &self.members {
            tx.insert_resource(m).await?;
        }
        for l in &self.listeners {
            tx.insert_resource(l).await?;
        }
        for p in &self.policies {
            tx.insert_resource(p).await?;
        }
        for r in &self.rules {
            tx.insert_resource(r).await?;
        }
        Ok(())
    }

    /// Full listener objects for the POST reply.
    pub fn render_listeners(&self) -> Vec<Value> {
        self.listeners
            .iter()
            .map(|l| {
                let mut m = super::listeners::render(l);
                let ids: Vec<Value> = self
                    .policies
                    .iter()
                    .filter(|p| p.listener_id == l.id)
                    .map(|p| json!({"id": p.id}))
                    .collect();
                m.insert("l7policies".into(), Value::Array(ids));
                Value::Object(m)
            })
            .collect()
    }

    /// Full pool objects for the POST reply.
    pub fn render_pools(&self) -> Vec<Value> {
        self.pools
            .iter()
            .map(|p| {
                let mut m = super::pools::render(p);
                let members: Vec<Value> = self
                    .members
                    .iter()
                    .filter(|x| x.pool_id == p.id)
                    .map(|x| json!({"id": x.id}))
                    .collect();
                m.insert("members".into(), Value::Array(members));
                m.insert(
                    "healthmonitor_id".into(),
                    self.monitors
                        .iter()
                        .find(|h| h.pool_id == p.id)
                        .map(|h| json!(h.id))
                        .unwrap_or(Value::Null),
                );
                let listeners: Vec<Value> = self
                    .listeners
                    .iter()
                    .filter(|l| l.default_pool_id == Some(p.id))
                    .map(|l| json!({"id": l.id}))
                    .collect();
                m.insert("listeners".into(), Value::Array(listeners));
                Value::Object(m)
            })
            .collect()
    }
}
