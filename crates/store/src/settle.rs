//! Octavia's completion rules: settling a job moves its load balancer's graph out of
//! `PENDING_*` (see [`Store::settle_job`]).

use klb_model::{
    HealthMonitor, Kind, L7Policy, L7Rule, Listener, LoadBalancer, Member, Pool, Provisioned,
    ProvisioningStatus,
};
use sqlx::AnyConnection;
use tracing::{debug, warn};

use crate::StoreError;
use crate::batch::WriteBatch;
use crate::document::Document;
use crate::error::query;
use crate::jobs::{Job, Outcome};
use crate::query::placeholders;
use crate::store::Store;
use crate::tx::WriteTx;

impl Store {
    /// Ends `job` and applies Octavia's completion rules to its load balancer's graph, in one
    /// transaction:
    ///
    /// Success: objects in `PENDING_CREATE`/`PENDING_UPDATE` become `ACTIVE`; objects in
    /// `PENDING_DELETE` are removed with their descendants (listeners whose default pool was
    /// removed lose the reference); a load balancer in `PENDING_DELETE` loses every child and
    /// is kept as `DELETED` (hidden from the API). The job row is deleted.
    ///
    /// Failure: the target and every other pending object become `ERROR`, except that the load
    /// balancer and listeners that were only locked for a child change (`PENDING_UPDATE`,
    /// not the target) go back to `ACTIVE`. The job stays with `state = failed` and
    /// `last_error = reason`.
    ///
    /// Reverted (a change klb made on its own, undone completely): the job fails the same way
    /// and every pending object goes back to `ACTIVE`.
    ///
    /// Every document whose status changes gets `updated_at` = now, and so does a listener
    /// that loses its default pool (Octavia's `updated_at` changes with every write of a row).
    pub async fn settle_job(&self, job: &Job, outcome: Outcome) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        Self::settle_in(&mut tx, job, &outcome).await?;
        tx.commit().await?;
        debug!(job = %job.id, lb = %job.loadbalancer_id, op = job.op.as_str(), ?outcome, "job settled");
        Ok(())
    }

    /// [`Store::settle_job`] for several jobs (of different load balancers, as
    /// [`Store::claim_jobs`] returns them): all settle or none. Successes are settled together
    /// from one read of their pending objects; when no subtree is removed (creates, updates,
    /// LB deletes) that is one write batch whose versioned updates check that nothing changed
    /// since the read, so it needs no transaction (one statement on SQLite). Otherwise, or on
    /// a conflict, one transaction.
    pub async fn settle_jobs(&self, jobs: &[Job], outcome: Outcome) -> Result<(), StoreError> {
        let mut lbs: Vec<&str> = jobs.iter().map(|j| j.loadbalancer_id.as_str()).collect();
        lbs.sort_unstable();
        lbs.dedup();
        let together = outcome == Outcome::Success && lbs.len() == jobs.len();
        if together {
            let mut reader = self
                .inner
                .reader
                .acquire()
                .await
                .map_err(query("acquire reader"))?;
            let pending = pending_of(&mut reader, &lb_ids(jobs)).await?;
            drop(reader);
            let plan = SettlePlan::successes(jobs, pending)?;
            if plan.removed.is_empty() {
                // Not through the group writer: API requests would then wait for this
                // background work; on its own it takes turns with them on the writer.
                match self.apply_alone(plan.writes).await {
                    Ok(()) => {
                        debug!(jobs = jobs.len(), "jobs settled");
                        return Ok(());
                    }
                    Err(StoreError::VersionConflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let mut tx = self.begin().await?;
        if together {
            Self::settle_successes_in(&mut tx, jobs).await?;
        } else {
            for job in jobs {
                Self::settle_in(&mut tx, job, &outcome).await?;
            }
        }
        tx.commit().await?;
        debug!(jobs = jobs.len(), ?outcome, "jobs settled");
        Ok(())
    }

    /// The success rules of [`Store::settle_job`] for jobs of distinct load balancers.
    async fn settle_successes_in(tx: &mut WriteTx, jobs: &[Job]) -> Result<(), StoreError> {
        let pending = pending_of(&mut tx.tx, &lb_ids(jobs)).await?;
        let plan = SettlePlan::successes(jobs, pending)?;
        tx.apply(plan.writes).await?;
        // After the status writes: clearing a listener's default pool re-reads it.
        tx.remove_subtrees(plan.removed).await
    }

    async fn settle_in(tx: &mut WriteTx, job: &Job, outcome: &Outcome) -> Result<(), StoreError> {
        match outcome {
            Outcome::Success => Self::settle_successes_in(tx, std::slice::from_ref(job)).await?,
            Outcome::Reverted(reason) => {
                let pending =
                    pending_of(&mut tx.tx, std::slice::from_ref(&job.loadbalancer_id)).await?;
                Self::fail_job_row(tx, job, reason).await?;
                for mut doc in pending {
                    tx.set_status(&mut doc, ProvisioningStatus::Active).await?;
                }
            }
            Outcome::Failed(reason) => {
                let pending =
                    pending_of(&mut tx.tx, std::slice::from_ref(&job.loadbalancer_id)).await?;
                Self::fail_job_row(tx, job, reason).await?;
                let target_is_lb = job.target_kind == Kind::LoadBalancer;
                for mut doc in pending {
                    let is_target = doc.id == job.target_id && doc.kind == job.target_kind;
                    let only_locked = !is_target
                        && doc.status() == Some(ProvisioningStatus::PendingUpdate)
                        && ((doc.kind == Kind::LoadBalancer && !target_is_lb)
                            || doc.kind == Kind::Listener);
                    if only_locked {
                        tx.set_status(&mut doc, ProvisioningStatus::Active).await?;
                    } else {
                        tx.set_status(&mut doc, ProvisioningStatus::Error).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn fail_job_row(tx: &mut WriteTx, job: &Job, reason: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET state = 'failed', last_error = $1, lease_owner = NULL, lease_expires_at = NULL WHERE id = $2")
            .bind(reason)
            .bind(&job.id)
            .execute(&mut *tx.tx)
            .await
            .map_err(query("settle job"))?;
        Ok(())
    }
}

impl WriteTx {
    /// `DELETE FROM table WHERE column IN (values)` plus `extra` conditions, 500 values per
    /// statement.
    async fn delete_where_in(
        &mut self,
        table: &str,
        column: &str,
        extra: &str,
        values: &[String],
        op: &'static str,
    ) -> Result<(), StoreError> {
        for chunk in values.chunks(500) {
            let sql = format!(
                "DELETE FROM {table} WHERE {column} IN ({}){extra}",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for v in chunk {
                q = q.bind(v.as_str());
            }
            q.execute(&mut *self.tx).await.map_err(query(op))?;
        }
        Ok(())
    }

    /// Sets a document's provisioning status (column and body) and writes it.
    async fn set_status(
        &mut self,
        doc: &mut Document,
        status: ProvisioningStatus,
    ) -> Result<(), StoreError> {
        with_status(doc, status)?;
        self.update_body(doc).await
    }

    /// Removes documents and everything below them (children by `parent_id`), and clears
    /// listeners' default-pool references to removed pools.
    async fn remove_subtrees(&mut self, mut ids: Vec<String>) -> Result<(), StoreError> {
        let mut all = Vec::new();
        while !ids.is_empty() {
            let rels = self.relations(&ids).await?;
            // Listeners pointing at a removed pool keep living without their default pool.
            for rel in rels.iter().filter(|r| {
                r.kind == Kind::Listener && r.ref_id.as_ref().is_some_and(|p| ids.contains(p))
            }) {
                if let Some(mut doc) = self.get_for_update(rel.kind, &rel.id).await? {
                    doc.rewrite(|listener: &mut Listener| {
                        listener.default_pool_id = None;
                        listener.updated_at = Some(now_micros());
                    })?;
                    doc.ref_id = None;
                    self.update(&mut doc).await?;
                }
            }
            all.append(&mut ids);
            ids = rels
                .into_iter()
                .filter(|r| {
                    r.parent_id.as_ref().is_some_and(|p| all.contains(p)) && !all.contains(&r.id)
                })
                .map(|r| r.id)
                .collect();
            ids.sort();
            ids.dedup();
        }
        self.delete_where_in("resources", "id", "", &all, "remove")
            .await?;
        if all.len() > 1000 {
            warn!(n = all.len(), "large subtree removed in one settle");
        }
        Ok(())
    }
}

fn lb_ids(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(|j| j.loadbalancer_id.clone()).collect()
}

/// Documents of these load balancers' graphs in a `PENDING_*` status, oldest first.
async fn pending_of(
    conn: &mut AnyConnection,
    lb_ids: &[String],
) -> Result<Vec<Document>, StoreError> {
    let mut docs = Vec::new();
    for chunk in lb_ids.chunks(500) {
        let sql = format!(
            "SELECT {} FROM resources WHERE loadbalancer_id IN ({}) AND provisioning_status IN ('PENDING_CREATE', 'PENDING_UPDATE', 'PENDING_DELETE') ORDER BY created_at, id",
            Document::COLUMNS,
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id.as_str());
        }
        let rows = q
            .fetch_all(&mut *conn)
            .await
            .map_err(query("pending of lb"))?;
        for row in &rows {
            docs.push(Document::from_row(row).map_err(query("pending of lb"))?);
        }
    }
    Ok(docs)
}

/// What settling jobs as successes writes: the job rows go, pending objects become `ACTIVE`
/// (a deleted load balancer `DELETED`, its graph cleared), and `removed` objects go with
/// their subtrees (which needs relation reads, so a transaction).
struct SettlePlan {
    writes: WriteBatch,
    removed: Vec<String>,
}

impl SettlePlan {
    fn successes(jobs: &[Job], pending: Vec<Document>) -> Result<SettlePlan, StoreError> {
        let mut writes = WriteBatch::new();
        for job in jobs {
            writes.job_done(job.id.clone());
        }
        let mut by_lb: std::collections::BTreeMap<String, Vec<Document>> = Default::default();
        for doc in pending {
            if let Some(lb) = doc.loadbalancer_id.clone() {
                by_lb.entry(lb).or_default().push(doc);
            }
        }
        let mut removed = Vec::new();
        for (lb_id, docs) in by_lb {
            let lb_deleting = docs.iter().any(|d| {
                d.kind == Kind::LoadBalancer
                    && d.status() == Some(ProvisioningStatus::PendingDelete)
            });
            if lb_deleting {
                // The LB is kept as DELETED (hidden); everything under it goes.
                if let Some(mut lb) = docs.into_iter().find(|d| d.kind == Kind::LoadBalancer) {
                    with_status(&mut lb, ProvisioningStatus::Deleted)?;
                    writes.update_body(lb);
                }
                writes.clear_graph(lb_id);
                continue;
            }
            for mut doc in docs {
                match doc.status() {
                    Some(ProvisioningStatus::PendingDelete) => removed.push(doc.id.clone()),
                    _ => {
                        with_status(&mut doc, ProvisioningStatus::Active)?;
                        writes.update_body(doc);
                    }
                }
            }
        }
        Ok(SettlePlan { writes, removed })
    }
}

/// Sets a document's provisioning status (column and typed body) and its `updated_at`
/// (Octavia sets `updated_at` on every change of a row, the provider's status changes
/// included); the caller writes it. A failure's reason is kept on the job row
/// (`last_error`), not in the document.
fn with_status(doc: &mut Document, status: ProvisioningStatus) -> Result<(), StoreError> {
    fn set<T: Provisioned>(
        doc: &mut Document,
        status: ProvisioningStatus,
    ) -> Result<(), StoreError> {
        doc.rewrite(|value: &mut T| value.set_provisioning_status(status, now_micros()))
    }
    match doc.kind.resource() {
        Some(Kind::LoadBalancer) => set::<LoadBalancer>(doc, status)?,
        Some(Kind::Listener) => set::<Listener>(doc, status)?,
        Some(Kind::Pool) => set::<Pool>(doc, status)?,
        Some(Kind::Member) => set::<Member>(doc, status)?,
        Some(Kind::HealthMonitor) => set::<HealthMonitor>(doc, status)?,
        Some(Kind::L7Policy) => set::<L7Policy>(doc, status)?,
        Some(Kind::L7Rule) => set::<L7Rule>(doc, status)?,
        // Only the kinds above have a provisioning status (the pending reads select on it);
        // anything else keeps its body and gets the column only.
        Some(Kind::LbVm) | None => {}
    }
    doc.provisioning_status = Some(status.as_str().to_owned());
    Ok(())
}

/// Now, at the precision the model serializes `updated_at` (microseconds, like
/// `created_at`).
fn now_micros() -> chrono::DateTime<chrono::Utc> {
    let now = chrono::Utc::now();
    chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}
