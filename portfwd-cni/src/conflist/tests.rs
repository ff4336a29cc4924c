//! The rewrite on real conflists: containerd's default (with the `externalSetMarkChain` that
//! Kubernetes' docs add), flannel's and a Calico-like one (both cniVersion 0.3.1), Debian's
//! podman conflist and one `podman network create` wrote (podman 4.3.1, CNI 0.4.0, dual-stack).
use serde_json::{Value, json};

use super::*;

const CONTAINERD: &str = include_str!("../../tests/fixtures/conflist/10-containerd-net.conflist");
const FLANNEL: &str = include_str!("../../tests/fixtures/conflist/10-flannel.conflist");
const CALICO: &str = include_str!("../../tests/fixtures/conflist/10-calico.conflist");
const PODMAN_DEBIAN: &str = include_str!("../../tests/fixtures/conflist/87-podman-bridge.conflist");
const PODMAN_CREATED: &str =
    include_str!("../../tests/fixtures/conflist/podman-4.3-dualstack.conflist");

fn install() -> Change {
    Change::Install {
        socket: None,
        append: false,
    }
}

fn with_socket(socket: &str) -> Change {
    Change::Install {
        socket: Some(socket.to_owned()),
        append: false,
    }
}

/// Rewrites, expecting a change; returns the outcome and the new text.
fn changed(text: &str, change: &Change, allow: &[&str]) -> (Outcome, String) {
    let allow: Vec<String> = allow.iter().map(|v| (*v).to_owned()).collect();
    let r = rewrite(text, change, &allow).unwrap_or_else(|e| panic!("rewrite failed: {e}"));
    let text = r
        .text
        .unwrap_or_else(|| panic!("expected a change, got {}", r.outcome));
    (r.outcome, text)
}

/// Rewrites, expecting nothing to change; returns the outcome.
fn unchanged(text: &str, change: &Change, allow: &[&str]) -> Outcome {
    let allow: Vec<String> = allow.iter().map(|v| (*v).to_owned()).collect();
    let r = rewrite(text, change, &allow).unwrap_or_else(|e| panic!("rewrite failed: {e}"));
    assert_eq!(r.text, None, "{} changed the text", r.outcome);
    assert!(!r.outcome.changed());
    r.outcome
}

fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// Every plugin but `index`, and every top-level key but `plugins`, are as they were.
fn assert_rest_kept(before: &str, after: &str, index: usize) {
    let (mut b, mut a) = (value(before), value(after));
    let bp = b["plugins"].as_array_mut().unwrap().remove(index);
    let ap = a["plugins"].as_array_mut().unwrap().remove(index);
    assert_eq!(a, b, "something besides plugins[{index}] changed");
    assert_ne!(ap, bp);
}

#[test]
fn containerd_default_portmap_becomes_portfwd_cni_in_place() {
    let (outcome, text) = changed(CONTAINERD, &install(), &[]);
    assert_eq!(
        outcome,
        Outcome::Replaced {
            index: 1,
            dropped: vec!["externalSetMarkChain".to_owned()],
        }
    );
    assert_rest_kept(CONTAINERD, &text, 1);
    assert_eq!(
        value(&text)["plugins"][1],
        json!({"type": "portfwd-cni", "capabilities": {"portMappings": true}})
    );
    // The file's own indentation and key order, and its final newline.
    assert!(text.starts_with("{\n  \"cniVersion\": \"1.0.0\",\n  \"name\": \"containerd-net\",\n"));
    assert!(text.ends_with("}\n"));
}

#[test]
fn podman_created_conflist_changes_in_the_type_only() {
    // podman writes the same pretty JSON (3 spaces, no final newline) as the rewrite: the
    // result is the original with one word changed.
    let (outcome, text) = changed(PODMAN_CREATED, &install(), &[]);
    assert_eq!(
        outcome,
        Outcome::Replaced {
            index: 1,
            dropped: vec![]
        }
    );
    assert_eq!(
        text,
        PODMAN_CREATED.replace("\"type\": \"portmap\"", "\"type\": \"portfwd-cni\"")
    );
}

#[test]
fn podman_debian_conflist_keeps_firewall_and_tuning_after_it() {
    let (outcome, text) = changed(
        PODMAN_DEBIAN,
        &with_socket("/run/portfwd/portfwd.sock"),
        &[],
    );
    assert!(matches!(outcome, Outcome::Replaced { index: 1, .. }));
    assert_rest_kept(PODMAN_DEBIAN, &text, 1);
    let types: Vec<Value> = value(&text)["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].clone())
        .collect();
    assert_eq!(types, ["bridge", "portfwd-cni", "firewall", "tuning"]);
    assert_eq!(
        value(&text)["plugins"][1],
        json!({"type": "portfwd-cni", "capabilities": {"portMappings": true},
               "socket": "/run/portfwd/portfwd.sock"})
    );
}

#[test]
fn flannel_0_3_1_portmap_becomes_portfwd_cni() {
    let (outcome, text) = changed(FLANNEL, &install(), &[]);
    assert!(matches!(outcome, Outcome::Replaced { index: 1, .. }));
    assert_rest_kept(FLANNEL, &text, 1);
}

#[test]
fn a_version_the_plugin_does_not_speak_is_refused_unless_allowed() {
    let old = FLANNEL.replace("\"0.3.1\"", "\"0.2.0\"");
    let err = rewrite(&old, &install(), &[]).unwrap_err();
    assert!(matches!(&err, ConflistError::Version { found } if found == "0.2.0"));
    assert!(
        err.to_string().contains("--allow-cni-version 0.2.0"),
        "{err}"
    );
    let (outcome, _) = changed(&old, &install(), &["0.2.0"]);
    assert!(matches!(outcome, Outcome::Replaced { index: 1, .. }));
    // Every version the plugin speaks is rewritten.
    for version in SUPPORTED_VERSIONS {
        let conf = FLANNEL.replace("0.3.1", version);
        changed(&conf, &install(), &[]);
    }
}

#[test]
fn calico_like_loses_snat_and_keeps_bandwidth() {
    let (outcome, text) = changed(CALICO, &install(), &[]);
    assert_eq!(
        outcome,
        Outcome::Replaced {
            index: 1,
            dropped: vec!["snat".to_owned()],
        }
    );
    assert_rest_kept(CALICO, &text, 1);
    assert_eq!(
        value(&text)["plugins"][2],
        json!({"type": "bandwidth", "capabilities": {"bandwidth": true}})
    );
}

#[test]
fn every_portmap_only_key_is_dropped_and_other_keys_kept() {
    let conf = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "bridge"},
        {"type": "portmap", "snat": false, "markMasqBit": 13, "externalSetMarkChain": "X",
         "conditionsV4": ["-s", "1.2.3.4"], "conditionsV6": [], "masqAll": true,
         "capabilities": {"portMappings": true, "other": true}, "custom": {"kept": 1}}
    ]});
    let (outcome, text) = changed(&conf.to_string(), &install(), &[]);
    let Outcome::Replaced { dropped, .. } = outcome else {
        panic!("{outcome}")
    };
    assert_eq!(dropped, PORTMAP_ONLY_KEYS);
    assert_eq!(
        value(&text)["plugins"][1],
        json!({"type": "portfwd-cni",
               "capabilities": {"portMappings": true, "other": true}, "custom": {"kept": 1}})
    );
}

#[test]
fn a_portmap_without_capabilities_gets_them() {
    let conf = r#"{"cniVersion":"0.4.0","name":"n","plugins":[{"type":"portmap","x":1}]}"#;
    let (_, text) = changed(conf, &install(), &[]);
    assert_eq!(
        text,
        "{\n  \"cniVersion\": \"0.4.0\",\n  \"name\": \"n\",\n  \"plugins\": [\n    {\n      \"type\": \"portfwd-cni\",\n      \"capabilities\": {\n        \"portMappings\": true\n      },\n      \"x\": 1\n    }\n  ]\n}"
    );
}

#[test]
fn running_twice_changes_nothing() {
    for (conf, allow) in [
        (CONTAINERD, &[][..]),
        (FLANNEL, &[][..]),
        (CALICO, &[][..]),
        (PODMAN_DEBIAN, &[][..]),
        (PODMAN_CREATED, &[][..]),
    ] {
        for change in [install(), with_socket("/run/portfwd/portfwd.sock")] {
            let (_, once) = changed(conf, &change, allow);
            let again = unchanged(&once, &change, allow);
            assert_eq!(again, Outcome::AlreadyInstalled { index: 1 });
            // An already rewritten conflist is left alone whatever its version.
            unchanged(&once, &change, &[]);
        }
    }
}

#[test]
fn a_new_socket_updates_the_entry_in_place() {
    let (_, first) = changed(CONTAINERD, &with_socket("/run/portfwd/portfwd.sock"), &[]);
    let (outcome, second) = changed(&first, &with_socket("/run/pf/other.sock"), &[]);
    assert_eq!(outcome, Outcome::Updated { index: 1 });
    assert_eq!(value(&second)["plugins"][1]["socket"], "/run/pf/other.sock");
    // No socket asked: the one there stays.
    unchanged(&second, &install(), &[]);
}

#[test]
fn without_portmap_nothing_changes_unless_append_is_asked() {
    let conf = json!({"cniVersion": "1.0.0", "name": "cilium", "plugins": [
        {"type": "cilium-cni", "enable-debug": false}]})
    .to_string();
    assert_eq!(unchanged(&conf, &install(), &[]), Outcome::NoPortmap);
    assert!(Outcome::NoPortmap.to_string().contains("unchanged"));
    let append = Change::Install {
        socket: None,
        append: true,
    };
    let (outcome, text) = changed(&conf, &append, &[]);
    assert_eq!(outcome, Outcome::Appended { index: 1 });
    assert_eq!(
        value(&text)["plugins"],
        json!([{"type": "cilium-cni", "enable-debug": false},
               {"type": "portfwd-cni", "capabilities": {"portMappings": true}}])
    );
    assert_eq!(
        unchanged(&text, &append, &[]),
        Outcome::AlreadyInstalled { index: 1 }
    );
}

#[test]
fn roll_back_restores_portmap_and_the_rest() {
    for (conf, allow) in [
        (CONTAINERD, &[][..]),
        (FLANNEL, &[][..]),
        (CALICO, &[][..]),
        (PODMAN_DEBIAN, &[][..]),
        (PODMAN_CREATED, &[][..]),
    ] {
        let (_, installed) = changed(conf, &with_socket("/run/portfwd/portfwd.sock"), allow);
        // No version check on the way back: the node must always be able to return.
        let (outcome, back) = changed(&installed, &Change::Rollback, &[]);
        assert_eq!(outcome, Outcome::RolledBack { index: 1 });
        // The original, without portmap's own keys (portmap's defaults then apply; the
        // backup file has them).
        let mut expected = value(conf);
        for key in PORTMAP_ONLY_KEYS {
            expected["plugins"][1].as_object_mut().unwrap().remove(key);
        }
        assert_eq!(value(&back), expected);
        assert_eq!(
            unchanged(&back, &Change::Rollback, &[]),
            Outcome::NothingToRollBack
        );
    }
    // podman's own output comes back byte for byte.
    let (_, installed) = changed(PODMAN_CREATED, &install(), &[]);
    let (_, back) = changed(&installed, &Change::Rollback, &[]);
    assert_eq!(back, PODMAN_CREATED);
}

#[test]
fn ambiguous_or_broken_chains_are_errors() {
    let both = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "portmap"}, {"type": "portfwd-cni"}]})
    .to_string();
    for change in [install(), Change::Rollback] {
        assert!(matches!(
            rewrite(&both, &change, &[]),
            Err(ConflistError::Both {
                portmap: 0,
                portfwd: 1
            })
        ));
    }
    let twice = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "portmap"}, {"type": "portmap"}]})
    .to_string();
    assert!(matches!(
        rewrite(&twice, &install(), &[]),
        Err(ConflistError::Repeated {
            kind: "portmap",
            count: 2
        })
    ));
    let untyped = r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"x":1}]}"#;
    assert!(matches!(
        rewrite(untyped, &install(), &[]),
        Err(ConflistError::Plugin(1))
    ));
    // A single-plugin .conf has no chain.
    let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#;
    assert!(matches!(
        rewrite(conf, &install(), &[]),
        Err(ConflistError::Shape(_))
    ));
    assert!(matches!(
        rewrite("{\"plugins\": [", &install(), &[]),
        Err(ConflistError::Json(_))
    ));
}
