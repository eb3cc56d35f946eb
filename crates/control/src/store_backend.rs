//! The store side of the LB flows ([`StoreBackend`]): each VM's desired state comes from the
//! stored graph, and the LB VMs the flows record become `lbvm` documents (the amphora API, the
//! health manager and the flows' job pump read them). Jobs become flow runs in
//! `klb_flow::jobs`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use klb_certs::{CertError, CertUsage, CertificateManager};
use klb_flow::StepError;
use klb_flow::lb::{LbBackend, LbResources, Vm};
use klb_model::{Kind, LbVm, LbVmStatus, ProvisioningStatus};
use klb_store::{Document, DocumentKind, ListQuery, Store};
use uuid::Uuid;

use crate::desired::{self, DataPlane, DesiredError, Graph, VmPlan};

/// Kind of the document recording an LB's cloud resources (id = load balancer id).
pub const RESOURCES_KIND: DocumentKind = DocumentKind::LbResources;

/// The LB VM record id of a compute server (the amphora id the API shows).
pub fn vm_record_id(server_id: &str) -> Uuid {
    Uuid::parse_str(server_id).unwrap_or_else(|_| {
        // Non-UUID server ids (other clouds): a stable id derived from the text.
        let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        for b in server_id.bytes() {
            h ^= u128::from(b);
            h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
        }
        Uuid::from_u128(h)
    })
}

/// The store side of the LB flows.
pub struct StoreBackend {
    store: Store,
    data_plane: DataPlane,
    certs: Arc<dyn CertificateManager>,
}

impl StoreBackend {
    /// A backend over `store` with the operator's data-plane settings; TLS material of
    /// TERMINATED_HTTPS listeners and TLS pools comes from `certs`.
    pub fn new(store: Store, data_plane: DataPlane, certs: Arc<dyn CertificateManager>) -> Self {
        StoreBackend {
            store,
            data_plane,
            certs,
        }
    }

    /// The PEM material of every certificate ref the live listeners and pools use, fetched as
    /// the load balancer's project. Ids match the ones [`desired::build`] puts in the fields.
    async fn certificates(&self, graph: &Graph) -> Result<Vec<klb_proto::Certificate>, StepError> {
        let live = |s: ProvisioningStatus| {
            !matches!(
                s,
                ProvisioningStatus::PendingDelete | ProvisioningStatus::Deleted
            )
        };
        let mut wanted: BTreeMap<String, (String, CertUsage)> = BTreeMap::new();
        let mut want = |r: Option<&String>, usage| {
            if let Some(r) = r {
                wanted.insert(desired::certificate_id(r), (r.clone(), usage));
            }
        };
        for l in graph
            .listeners
            .iter()
            .filter(|l| live(l.provisioning_status))
        {
            want(l.default_tls_container_ref.as_ref(), CertUsage::Server);
            for r in &l.sni_container_refs {
                want(Some(r), CertUsage::Server);
            }
            want(l.client_ca_tls_container_ref.as_ref(), CertUsage::CaBundle);
            want(l.client_crl_container_ref.as_ref(), CertUsage::Crl);
        }
        for p in graph.pools.iter().filter(|p| live(p.provisioning_status)) {
            want(p.tls_container_ref.as_ref(), CertUsage::Client);
            want(p.ca_tls_container_ref.as_ref(), CertUsage::CaBundle);
            want(p.crl_container_ref.as_ref(), CertUsage::Crl);
        }
        let project = &graph.load_balancer.project_id;
        let mut out = Vec::with_capacity(wanted.len());
        for (id, (reference, usage)) in wanted {
            let pem = self
                .certs
                .fetch(project, &reference, usage)
                .await
                .map_err(|e| match e {
                    // A ref that stopped resolving (secret deleted) will not come back by
                    // retrying; the store failing might.
                    CertError::Store(_) => StepError::retry(e.to_string()),
                    _ => StepError::fatal(e.to_string()),
                })?;
            out.push(klb_proto::Certificate { id, pem });
        }
        Ok(out)
    }
}

fn step_error(e: impl std::fmt::Display) -> StepError {
    StepError::retry(e.to_string())
}

fn plan_of(vm: &Vm) -> VmPlan {
    VmPlan {
        id: vm_record_id(&vm.server_id).to_string(),
        index: vm.index,
        name: vm.name.clone(),
        l3_ip: vm.l3_ip,
    }
}

#[async_trait]
impl LbBackend for StoreBackend {
    async fn desired_states(
        &self,
        lb_id: &str,
        graph: Option<&Graph>,
        vip: IpAddr,
        vms: &[Vm],
    ) -> Result<Vec<klb_proto::DesiredState>, StepError> {
        // The graph the job pump read, when it was handed over; else (a resumed run, a run
        // without a locked graph) one read here.
        let read;
        let graph = match graph {
            Some(g) => g,
            None => {
                let docs = self.store.graph(lb_id).await.map_err(step_error)?;
                read = Graph::from_documents(&docs)
                    .map_err(step_error)?
                    .ok_or_else(|| step_error(DesiredError::Missing(lb_id.to_owned())))?;
                &read
            }
        };
        // A new version per push; pushes of one LB are serialized by the flow engine.
        let version = chrono::Utc::now().timestamp_micros().max(1) as u64;
        let plans: Vec<VmPlan> = vms.iter().map(plan_of).collect();
        // Fetched and validated once for every VM of the push.
        let certificates = self.certificates(graph).await?;
        desired::build(graph, vip, version, &plans, &self.data_plane, certificates)
            .map_err(|e| StepError::fatal(e.to_string()))
    }

    async fn record(&self, lb_id: &str, resources: &LbResources) -> Result<(), StepError> {
        let lb_uuid = Uuid::parse_str(lb_id).map_err(step_error)?;
        let body = serde_json::to_string(resources).map_err(step_error)?;
        let mut tx = self.store.begin().await.map_err(step_error)?;
        match tx
            .get_for_update(RESOURCES_KIND, lb_id)
            .await
            .map_err(step_error)?
        {
            Some(mut doc) => {
                doc.body = body;
                tx.update(&mut doc).await.map_err(step_error)?;
            }
            None => {
                tx.insert(&resources_doc(lb_id, body))
                    .await
                    .map_err(step_error)?;
            }
        }
        let existing = tx
            .list(&ListQuery {
                kind: Some(Kind::LbVm.into()),
                loadbalancer_id: Some(lb_id.to_owned()),
                ..Default::default()
            })
            .await
            .map_err(step_error)?;
        let wanted: Vec<Uuid> = resources
            .vms
            .iter()
            .map(|vm| vm_record_id(&vm.server_id))
            .collect();
        for doc in &existing {
            if !wanted.iter().any(|id| id.to_string() == doc.id) {
                tx.delete(doc.kind, &doc.id).await.map_err(step_error)?;
            }
        }
        for vm in &resources.vms {
            let mut record = lb_vm_record(lb_uuid, vm);
            let previous = existing
                .iter()
                .find(|d| d.id == record.id.to_string())
                .and_then(|d| serde_json::from_str::<LbVm>(&d.body).ok());
            if let Some(prev) = previous {
                // Octavia: `created_at` stays, `updated_at` moves with every change of the row.
                record.created_at = prev.created_at;
                record.updated_at = prev.updated_at;
                if record == prev {
                    continue;
                }
                record.updated_at = Some(chrono::Utc::now());
            }
            tx.put_resource(&record).await.map_err(step_error)?;
        }
        tx.commit().await.map_err(step_error)
    }

    async fn forget(&self, lb_id: &str) -> Result<(), StepError> {
        let mut tx = self.store.begin().await.map_err(step_error)?;
        tx.delete(RESOURCES_KIND, lb_id).await.map_err(step_error)?;
        let vms = tx
            .list(&ListQuery {
                kind: Some(Kind::LbVm.into()),
                loadbalancer_id: Some(lb_id.to_owned()),
                include_deleted: true,
                ..Default::default()
            })
            .await
            .map_err(step_error)?;
        for doc in vms {
            tx.delete(doc.kind, &doc.id).await.map_err(step_error)?;
        }
        tx.commit().await.map_err(step_error)
    }
}

fn resources_doc(lb_id: &str, body: String) -> Document {
    Document::new(RESOURCES_KIND, lb_id, None, body)
}

fn lb_vm_record(lb_id: Uuid, vm: &Vm) -> LbVm {
    LbVm {
        id: vm_record_id(&vm.server_id),
        loadbalancer_id: Some(lb_id),
        compute_id: Some(vm.server_id.clone()),
        lb_network_ip: vm.mgmt_ip,
        vrrp_ip: vm.l3_ip,
        ha_ip: None,
        vrrp_port_id: vm.l3_port_id.clone(),
        ha_port_id: None,
        cert_expiration: None,
        cert_busy: false,
        role: None,
        status: if vm.active {
            LbVmStatus::Allocated
        } else {
            LbVmStatus::Booting
        },
        vrrp_interface: None,
        vrrp_id: None,
        vrrp_priority: None,
        cached_zone: None,
        created_at: chrono::Utc::now(),
        updated_at: None,
        image_id: None,
        compute_flavor: None,
    }
}

#[cfg(test)]
mod tests {
    use klb_agent_client::heartbeat::HeartbeatKeys;
    use klb_model::*;
    use klb_proto::SecretPem;

    use super::*;

    /// Counts fetches; answers every ref with a placeholder PEM.
    #[derive(Default)]
    struct CountingCerts {
        fetched: tokio::sync::Mutex<Vec<String>>,
    }

    #[async_trait]
    impl CertificateManager for CountingCerts {
        async fn fetch(
            &self,
            _: &str,
            reference: &str,
            _: CertUsage,
        ) -> Result<SecretPem, CertError> {
            self.fetched.lock().await.push(reference.to_owned());
            Ok(SecretPem::new(format!("PEM of {reference}")))
        }
    }

    fn vm(index: u32) -> Vm {
        Vm {
            index,
            server_id: Uuid::new_v4().to_string(),
            name: format!("vm{index}"),
            mgmt_ip: Some(IpAddr::from([198, 18, 1, index as u8])),
            l3_ip: Some(IpAddr::from([198, 18, 2, index as u8])),
            l3_port_id: None,
            active: true,
        }
    }

    #[tokio::test]
    async fn lb_vm_records_keep_created_at_and_move_updated_at_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::testutil::store(&dir).await;
        let backend = StoreBackend::new(
            store.clone(),
            DataPlane {
                base_as_number: 64_600,
                l3_router_as_number: 64_512,
                gateways: vec![IpAddr::from([198, 18, 2, 250])],
                bfd: true,
                default_maxconn: 10_000,
                peer_port: 1025,
                heartbeat_keys: None,
            },
            Arc::new(CountingCerts::default()),
        );
        let lb = Uuid::new_v4().to_string();
        let mut booting = vm(0);
        booting.active = false;
        let read = |store: Store, id: Uuid| async move {
            let doc = store
                .get(Kind::LbVm, &id.to_string())
                .await
                .unwrap()
                .unwrap();
            (
                serde_json::from_str::<LbVm>(&doc.body).unwrap(),
                doc.version,
            )
        };
        let id = vm_record_id(&booting.server_id);
        let mut resources = LbResources {
            vms: vec![booting.clone()],
            alarm_id: None,
            vip_ip: None,
        };
        backend.record(&lb, &resources).await.unwrap();
        let (first, v1) = read(store.clone(), id).await;
        assert_eq!(first.updated_at, None, "a new record was never updated");
        backend.record(&lb, &resources).await.unwrap();
        let (_, v2) = read(store.clone(), id).await;
        assert_eq!(v1, v2, "an unchanged record is not rewritten");
        resources.vms[0].active = true;
        backend.record(&lb, &resources).await.unwrap();
        let (second, _) = read(store.clone(), id).await;
        assert_eq!(second.created_at, first.created_at);
        assert_eq!(second.status, LbVmStatus::Allocated);
        assert!(
            second.updated_at.is_some(),
            "updated_at moves with the change"
        );
    }

    #[tokio::test]
    async fn one_read_and_one_fetch_per_certificate_serve_every_vm_of_a_push() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::testutil::store(&dir).await;
        let lb = klb_test_support::fixtures::load_balancer("p1", ProvisioningStatus::PendingUpdate);
        let listener = Listener {
            protocol: ListenerProtocol::TerminatedHttps,
            protocol_port: 443,
            default_tls_container_ref: Some("https://kms/v1/containers/a".into()),
            sni_container_refs: vec!["https://kms/v1/containers/b".into()],
            ..klb_test_support::fixtures::listener(&lb, ProvisioningStatus::PendingCreate)
        };
        let mut tx = store.begin().await.unwrap();
        tx.insert_resource(&lb).await.unwrap();
        tx.insert_resource(&listener).await.unwrap();
        tx.commit().await.unwrap();

        let certs = Arc::new(CountingCerts::default());
        let backend = StoreBackend::new(
            store,
            DataPlane {
                base_as_number: 64_600,
                l3_router_as_number: 64_512,
                gateways: vec![IpAddr::from([198, 18, 2, 250])],
                bfd: true,
                default_maxconn: 10_000,
                peer_port: 1025,
                heartbeat_keys: Some(HeartbeatKeys::new("master-secret")),
            },
            certs.clone(),
        );
        let vms = [vm(0), vm(1), vm(2)];
        let vip = IpAddr::from([198, 18, 3, 10]);
        let states = backend
            .desired_states(&lb.id.to_string(), None, vip, &vms)
            .await
            .unwrap();
        assert_eq!(states.len(), 3);
        for (state, vm) in states.iter().zip(&vms) {
            assert_eq!(state.vm.id, vm.server_id, "one state per VM, in order");
            assert_eq!(state.version, states[0].version, "one version per push");
            assert_eq!(state.peers.len(), 3);
            assert_eq!(state.certificates.len(), 2);
            assert_eq!(state.listeners.len(), 1);
            // Each VM gets its own heartbeat key, the one the receiver derives for it.
            let keys = HeartbeatKeys::new("master-secret");
            assert_eq!(
                state.heartbeat_key,
                Some(keys.for_vm(&lb.id.to_string(), &state.vm.id))
            );
        }
        assert_ne!(states[0].heartbeat_key, states[1].heartbeat_key);
        let mut fetched = certs.fetched.lock().await.clone();
        fetched.sort();
        assert_eq!(
            fetched,
            ["https://kms/v1/containers/a", "https://kms/v1/containers/b"],
            "each ref fetched once for the whole push, not once per VM"
        );
    }
}
