//! deploy/kubernetes: probes, security context, secrets by reference, replicas.

use super::*;

/// Every object of the manifests kustomization.yaml applies, with its file.
fn kubernetes_objects() -> Vec<(String, Yaml)> {
    let kustomization = yaml("deploy/kubernetes/kustomization.yaml");
    let listed: BTreeSet<String> = seq(&kustomization["resources"], "resources")
        .iter()
        .map(|r| str_of(r, "resource").to_string())
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, on_disk,
        "kustomization.yaml must apply every manifest in deploy/kubernetes"
    );
    listed
        .iter()
        .flat_map(|f| {
            yaml_docs(&format!("deploy/kubernetes/{f}"))
                .into_iter()
                .map(move |d| (f.clone(), d))
        })
        .collect()
}

fn object<'a>(objects: &'a [(String, Yaml)], kind: &str) -> &'a Yaml {
    let found: Vec<_> = objects.iter().filter(|(_, o)| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected");
    &found[0].1
}

fn matches_labels(selector: &Yaml, labels: &Yaml) -> bool {
    let selector = selector.as_mapping().expect("a label selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

/// The manifests, and the gateway Deployment's pod with its one container and its config.
struct Kit {
    objects: Vec<(String, Yaml)>,
    deployment: Yaml,
    config: toml::Value,
}

impl Kit {
    fn load() -> Kit {
        let objects = kubernetes_objects();
        let deployment = object(&objects, "Deployment").clone();
        let config = toml::from_str(&kubernetes_gateway_toml()).expect("gateway.toml is TOML");
        Kit {
            objects,
            deployment,
            config,
        }
    }

    fn pod(&self) -> &Yaml {
        &self.deployment["spec"]["template"]["spec"]
    }

    fn pod_labels(&self) -> &Yaml {
        &self.deployment["spec"]["template"]["metadata"]["labels"]
    }

    fn container(&self) -> &Yaml {
        let containers = seq(&self.pod()["containers"], "containers");
        assert_eq!(containers.len(), 1);
        &containers[0]
    }

    /// containerPort by port name.
    fn ports(&self) -> BTreeMap<String, u64> {
        seq(&self.container()["ports"], "ports")
            .iter()
            .map(|p| {
                (
                    str_of(&p["name"], "port name").to_string(),
                    p["containerPort"].as_u64().expect("containerPort"),
                )
            })
            .collect()
    }

    /// A port given by number or by name.
    fn port(&self, port: &Yaml) -> Option<u64> {
        match port {
            Yaml::String(name) => self.ports().get(name).copied(),
            other => other.as_u64(),
        }
    }

    fn admin_port(&self) -> u64 {
        u64::from(admin_port(&self.config))
    }
}

#[test]
fn kubernetes_probes_reach_healthz_and_readyz_on_the_admin_listener() {
    let kit = Kit::load();
    let c = kit.container();
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(
            kit.port(&get["port"]),
            Some(kit.admin_port()),
            "{probe} must reach the admin listener of configmap.yaml"
        );
    }
    // The kubelet probes from the node: an admin listener on loopback would fail every probe.
    let listen = kit.config["admin"]["listen"]
        .as_str()
        .expect("admin.listen");
    assert!(
        listen.starts_with("0.0.0.0:"),
        "admin.listen {listen} is unreachable for httpGet probes"
    );
    let ports = kit.ports();
    for port in listen_ports(&kit.config) {
        assert!(
            ports.values().any(|p| *p == u64::from(port)),
            "listener port {port} is not a containerPort: {ports:?}"
        );
    }
}

#[test]
fn kubernetes_pod_runs_as_the_images_user_without_privileges_and_with_resources() {
    let kit = Kit::load();
    let (pod, c) = (kit.pod(), kit.container());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Yaml::Bool(true));
    let uid = pod["securityContext"]["runAsUser"]
        .as_u64()
        .expect("runAsUser");
    assert!(uid > 0);
    assert_eq!(
        Some(uid),
        dockerfile_user("runtime"),
        "runAsUser must be the image's user"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], Yaml::Bool(false));
    assert_eq!(sc["readOnlyRootFilesystem"], Yaml::Bool(true));
    assert_ne!(sc["privileged"], Yaml::Bool(true));
    assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    assert!(
        listen_ports(&kit.config).iter().all(|p| *p >= 1024),
        "a port below 1024 needs NET_BIND_SERVICE, which is dropped"
    );
    assert_eq!(pod["automountServiceAccountToken"], Yaml::Bool(false));
    for (kind, what) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "memory"),
    ] {
        assert!(
            !c["resources"][kind][what].is_null(),
            "resources.{kind}.{what} is not set"
        );
    }
}

#[test]
fn kubernetes_config_and_secrets_are_mounted_by_reference_never_written() {
    let kit = Kit::load();
    for (file, o) in &kit.objects {
        assert!(
            o["apiVersion"].is_string() && o["kind"].is_string(),
            "{file}"
        );
        // Secrets are created by the operator (deployment.yaml says how): never stored here.
        assert_ne!(o["kind"], "Secret", "{file} holds a Secret");
    }
    let c = kit.container();
    // The config file and its TLS files are where the container's command and the config say.
    let args: Vec<&str> = seq(&c["args"], "args")
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    let config_path = args
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .expect("--config");
    let config_dir = Path::new(config_path).parent();
    let mount = seq(&c["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| config_dir == Some(Path::new(str_of(&m["mountPath"], "mountPath"))))
        .expect("a volume mounted where --config points");
    let volume = seq(&kit.pod()["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    // File in the mounted folder -> (configMap | secret, its name).
    let mut files = BTreeMap::new();
    for source in seq(&volume["projected"]["sources"], "projected sources") {
        for kind in ["configMap", "secret"] {
            if let Some(from) = source[kind]["name"].as_str() {
                for item in seq(&source[kind]["items"], "items") {
                    files.insert(
                        str_of(&item["path"], "path").to_string(),
                        (kind, from.to_string()),
                    );
                }
            }
        }
    }
    let file_name = Path::new(config_path)
        .file_name()
        .expect("a file")
        .to_string_lossy();
    assert_eq!(
        files.get(file_name.as_ref()),
        Some(&("configMap", "palisade-config".to_string()))
    );
    for cert in kit.config["tls"]["certificates"]
        .as_array()
        .expect("certificates")
    {
        for path in [
            cert["cert"].as_str().expect("cert"),
            cert["key"]["file"].as_str().expect("key file"),
        ] {
            assert!(
                matches!(files.get(path), Some(("secret", _))),
                "{path} is not mounted from a Secret: {files:?}"
            );
        }
    }

    // Every `{ env = ... }` of the config comes from a Secret, and no secret-looking variable
    // is written in the manifest.
    let mut names = Vec::new();
    env_references(&kit.config, &mut names);
    let env = seq(&c["env"], "env");
    for name in names {
        let var = env
            .iter()
            .find(|e| e["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} is not set in the Deployment"));
        assert!(
            var["valueFrom"]["secretKeyRef"]["name"].is_string() && var["value"].is_null(),
            "{name} must come from a secretKeyRef"
        );
    }
    for e in env {
        let name = str_of(&e["name"], "env name");
        let secretish = ["KEY", "SECRET", "PASSWORD", "TOKEN", "REDIS_URL"]
            .iter()
            .any(|s| name.contains(s));
        assert!(
            !secretish || e["value"].is_null(),
            "{name} is written in the manifest"
        );
    }
}

#[test]
fn kubernetes_replicas_share_limits_drain_and_survive_disruptions() {
    let kit = Kit::load();
    assert_shared_limits("kubernetes", &kit.config);
    assert!(matches_labels(
        &kit.deployment["spec"]["selector"]["matchLabels"],
        kit.pod_labels()
    ));
    // The kubelet waits longer than the preStop pause and shutdown_grace together.
    let grace = kit.pod()["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    let shutdown = kit.config["server"]["shutdown_grace"]
        .as_str()
        .and_then(|s| humantime::parse_duration(s).ok())
        .expect("shutdown_grace")
        .as_secs();
    assert!(
        grace > shutdown + 5,
        "terminationGracePeriodSeconds {grace} cuts the {shutdown}s drain"
    );
    let strategy = &kit.deployment["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(
        strategy["maxUnavailable"].as_u64(),
        Some(0),
        "a rollout must not lower capacity"
    );

    let replicas = kit.deployment["spec"]["replicas"]
        .as_u64()
        .expect("replicas");
    assert!(replicas >= 2);
    // So that `palisade audit` (run on this config by the configs tests) fails a local limit.
    let instances = kit.config["server"]["instances"].as_integer();
    assert!(
        instances.is_some_and(|n| n >= 2),
        "[server] instances must say several replicas share the traffic: {instances:?}"
    );
    let hpa = object(&kit.objects, "HorizontalPodAutoscaler");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        kit.deployment["metadata"]["name"]
    );
    assert!(hpa["spec"]["minReplicas"].as_u64().expect("minReplicas") >= 2);
    assert!(
        !kit.container()["resources"]["requests"]["cpu"].is_null(),
        "the HPA scales on CPU: it needs a CPU request"
    );
    let pdb = object(&kit.objects, "PodDisruptionBudget");
    assert!(matches_labels(
        &pdb["spec"]["selector"]["matchLabels"],
        kit.pod_labels()
    ));
    assert!(pdb["spec"]["maxUnavailable"]
        .as_u64()
        .is_some_and(|n| n < replicas));
}

#[test]
fn kubernetes_service_keeps_client_ips_and_leaves_the_admin_port_out() {
    let kit = Kit::load();
    let service = object(&kit.objects, "Service");
    assert!(matches_labels(
        &service["spec"]["selector"],
        kit.pod_labels()
    ));
    for p in seq(&service["spec"]["ports"], "ports") {
        let target = kit
            .port(&p["targetPort"])
            .expect("a targetPort that is a container port");
        assert_ne!(
            target,
            kit.admin_port(),
            "the admin listener is not for clients"
        );
    }
    // Per-IP limits, lockouts and IP lists need the client's address, not a node's.
    if service["spec"]["type"] == "LoadBalancer" || service["spec"]["type"] == "NodePort" {
        assert_eq!(service["spec"]["externalTrafficPolicy"], "Local");
    }
    // The admin port is open to the monitoring namespace only.
    let policy = object(&kit.objects, "NetworkPolicy");
    assert!(matches_labels(
        &policy["spec"]["podSelector"]["matchLabels"],
        kit.pod_labels()
    ));
    let mut admin_rules = 0;
    for rule in seq(&policy["spec"]["ingress"], "ingress") {
        let opens_admin = seq(&rule["ports"], "ports")
            .iter()
            .any(|p| p["port"].as_u64() == Some(kit.admin_port()));
        if opens_admin {
            admin_rules += 1;
            assert!(
                !seq(&rule["from"], "an admin rule must say from whom").is_empty(),
                "the admin port is open to everyone"
            );
        }
    }
    assert!(admin_rules > 0, "nothing may scrape the admin port");
}

#[test]
fn kubernetes_manifests_pass_the_schema_validators_where_installed() {
    let objects = kubernetes_objects();
    let files: BTreeSet<PathBuf> = objects
        .iter()
        .map(|(f, _)| repo().join("deploy/kubernetes").join(f))
        .collect();
    if installed("kubernetes-validate", &["--version"]) {
        let out = Command::new("kubernetes-validate")
            .arg("--strict")
            .args(&files)
            .output()
            .expect("kubernetes-validate");
        assert_ok(&out, "kubernetes-validate --strict");
    }
    if installed("kubectl", &["version", "--client"]) {
        // Offline: kustomize renders the set the way `kubectl apply -k` would.
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(repo().join("deploy/kubernetes"))
            .output()
            .expect("kubectl kustomize");
        assert_ok(&out, "kubectl kustomize");
        let rendered = String::from_utf8_lossy(&out.stdout).into_owned();
        let docs = serde_yaml::Deserializer::from_str(&rendered).count();
        assert_eq!(docs, objects.len(), "{rendered}");
    }
}
