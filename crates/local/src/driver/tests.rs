use super::pps::PpsWindow;
use super::*;

#[test]
fn pps_window_fires_once_per_transition_after_n_periods() {
    let mut w = PpsWindow::default();
    let t = 1000;
    let fires: Vec<bool> = [
        Some(2000), // 1 over
        Some(2000), // 2 over -> fire
        Some(3000), // still alarm: no refire
        Some(500),  // back to ok
        Some(2000), // 1
        None,       // no data breaks the streak
        Some(2000), // 1
        Some(2000), // 2 -> fire again
        Some(1000), // equal to the threshold is not above it: ok
    ]
    .into_iter()
    .map(|v| w.observe(v, t, 2))
    .collect();
    assert_eq!(
        fires,
        [false, true, false, false, false, false, false, true, false]
    );
    // evaluation_periods 0 behaves as 1.
    let mut w = PpsWindow::default();
    assert!(w.observe(Some(5), 1, 0));
}

#[test]
fn stable_networks_have_fixed_ids_names_and_gateways() {
    let nets = stable_networks(&AddressPlan::default());
    let by_name = |n: &str| nets.iter().find(|(net, _)| net.name == n).unwrap();
    let (vip, vip_sub) = by_name(VIP_NETWORK_NAME);
    assert_eq!(vip.id, "6b6c6200-0000-4000-8000-000000000101");
    assert_eq!(vip_sub.id, plan::VIP_SUBNET_ID.to_string());
    assert_eq!(vip_sub.cidr.to_string(), "198.19.0.0/20");
    assert_eq!(vip.subnet_ids, vec![vip_sub.id.clone()]);
    let (l3, l3_sub) = by_name(L3_NETWORK_NAME);
    assert_eq!(l3.id, plan::L3_NETWORK_ID.to_string());
    assert_eq!(l3_sub.gateway_ip, Some("198.18.64.1".parse().unwrap()));
    let (_, m_sub) = by_name(MEMBER_NETWORK_NAME);
    assert_eq!(m_sub.name, "klb-member-net-subnet");
    let (mgmt, _) = by_name(MGMT_NETWORK_NAME);
    assert_eq!(mgmt.id, plan::MGMT_NETWORK_ID.to_string());
    assert_eq!(nets.len(), 4);
}
