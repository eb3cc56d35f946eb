use klb_model::{Kind, OperatingStatus};
use klb_proto::MemberStatus;

use super::*;
use crate::testutil::{Lab, lab};

/// Statuses of (lb, listener, pool, members...) in that order.
fn check(lab: &Lab, reports: &[VmReport<'_>], expect: &[OperatingStatus]) {
    let got = derive(lab.graph(), reports);
    let mut seen = vec![
        got.get(&(Kind::LoadBalancer, lab.lb.id)).copied(),
        got.get(&(Kind::Listener, lab.listener.id)).copied(),
        got.get(&(Kind::Pool, lab.pool.id)).copied(),
    ];
    seen.extend(
        lab.members
            .iter()
            .map(|m| got.get(&(Kind::Member, m.id)).copied()),
    );
    let expect: Vec<Option<OperatingStatus>> = expect.iter().copied().map(Some).collect();
    assert_eq!(seen, expect);
}

use MemberStatus::{Down, NoCheck, Up};
use OperatingStatus::*;

#[test]
fn all_members_up_on_both_vms_is_online() {
    let lab = lab(2, true);
    let (a, b) = (
        lab.heartbeat("a", &[Up, Up], 5),
        lab.heartbeat("b", &[Up, Up], 7),
    );
    let reports = [
        VmReport {
            vm_id: "a",
            heartbeat: Some(&a),
        },
        VmReport {
            vm_id: "b",
            heartbeat: Some(&b),
        },
    ];
    check(&lab, &reports, &[Online, Online, Online, Online, Online]);
}

#[test]
fn one_member_down_degrades_pool_listener_and_lb() {
    let lab = lab(2, true);
    let (a, b) = (
        lab.heartbeat("a", &[Up, Down], 0),
        lab.heartbeat("b", &[Up, Down], 0),
    );
    let reports = [
        VmReport {
            vm_id: "a",
            heartbeat: Some(&a),
        },
        VmReport {
            vm_id: "b",
            heartbeat: Some(&b),
        },
    ];
    check(
        &lab,
        &reports,
        &[Degraded, Degraded, Degraded, Online, Error],
    );
}

#[test]
fn all_members_down_is_pool_error() {
    let lab = lab(1, true);
    let a = lab.heartbeat("a", &[Down], 0);
    let reports = [VmReport {
        vm_id: "a",
        heartbeat: Some(&a),
    }];
    check(&lab, &reports, &[Degraded, Degraded, Error, Error]);
}

#[test]
fn a_silent_vm_degrades_the_lb_only() {
    let lab = lab(1, true);
    let a = lab.heartbeat("a", &[Up], 0);
    let reports = [
        VmReport {
            vm_id: "a",
            heartbeat: Some(&a),
        },
        VmReport {
            vm_id: "b",
            heartbeat: None,
        },
    ];
    check(&lab, &reports, &[Degraded, Online, Online, Online]);
}

#[test]
fn no_vm_serving_is_lb_error() {
    let lab = lab(1, true);
    let reports = [
        VmReport {
            vm_id: "a",
            heartbeat: None,
        },
        VmReport {
            vm_id: "b",
            heartbeat: None,
        },
    ];
    let got = derive(lab.graph(), &reports);
    assert_eq!(got.get(&(Kind::LoadBalancer, lab.lb.id)), Some(&Error));
}

#[test]
fn pool_without_monitor_reports_no_monitor_members() {
    let lab = lab(2, false);
    let a = lab.heartbeat("a", &[NoCheck, NoCheck], 0);
    let reports = [VmReport {
        vm_id: "a",
        heartbeat: Some(&a),
    }];
    check(
        &lab,
        &reports,
        &[Online, Online, Online, NoMonitor, NoMonitor],
    );
}

#[test]
fn weight_zero_is_draining_and_admin_down_is_offline() {
    let mut lab = lab(2, true);
    lab.members[0].weight = 0;
    lab.members[1].admin_state_up = false;
    let a = lab.heartbeat("a", &[MemberStatus::Drain, MemberStatus::Maint], 0);
    let reports = [VmReport {
        vm_id: "a",
        heartbeat: Some(&a),
    }];
    let got = derive(lab.graph(), &reports);
    assert_eq!(got.get(&(Kind::Member, lab.members[0].id)), Some(&Draining));
    assert_eq!(got.get(&(Kind::Member, lab.members[1].id)), Some(&Offline));
}

#[test]
fn lb_admin_down_is_offline_everywhere() {
    let mut lab = lab(1, true);
    lab.lb.admin_state_up = false;
    let a = lab.heartbeat("a", &[Up], 0);
    let reports = [VmReport {
        vm_id: "a",
        heartbeat: Some(&a),
    }];
    check(&lab, &reports, &[Offline, Offline, Offline, Offline]);
}

#[test]
fn no_vms_means_nothing_judged() {
    let lab = lab(1, true);
    assert!(derive(lab.graph(), &[]).is_empty());
}

#[test]
fn stats_are_summed_over_vms() {
    let lab = lab(1, true);
    let (a, b) = (lab.heartbeat("a", &[Up], 5), lab.heartbeat("b", &[Up], 7));
    let reports = [
        VmReport {
            vm_id: "a",
            heartbeat: Some(&a),
        },
        VmReport {
            vm_id: "b",
            heartbeat: Some(&b),
        },
        VmReport {
            vm_id: "c",
            heartbeat: None,
        },
    ];
    let sum = sum_stats(&reports);
    assert_eq!(sum.load_balancer.requests, 12);
    // Each VM's own share is kept for the amphora stats endpoint; silent VMs have none.
    let listener = lab.listener.id.to_string();
    assert_eq!(sum.vms["a"][&listener].total_connections, 5);
    assert_eq!(sum.vms["b"][&listener].total_connections, 7);
    assert!(!sum.vms.contains_key("c"));
    assert_eq!(
        sum.listeners[&lab.listener.id.to_string()].total_connections,
        12
    );
}
