#![cfg(feature = "vultr")]
//! The Vultr provider against a stateful fake Vultr (wiremock with one responder holding the
//! state). Every request the client sends is checked against the OpenAPI spec in
//! `shared/specs/vultr/`.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use nemordp_core::{
    CloudProvider, CloudProviderExt, ErrorKind, InstanceId,
    cloud::{InstanceSpec, InstanceStatus, PageRequest},
    plan::OsKind,
    secrecy::ExposeSecret,
    testkit::cloud::{CloudKitConfig, run_all},
};
use nemordp_providers::vultr::{Vultr, VultrBuilder};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

const KEY: &str = "test-key-0123456789";

// ----- the fake -----

#[derive(Debug, Clone)]
struct FakeInstance {
    id: String,
    label: String,
    tags: Vec<String>,
    region: String,
    plan: String,
    os_id: i64,
    hostname: String,
    firewall_group_id: String,
    created: Instant,
    halted: bool,
    delete_refusals: u32,
}

#[derive(Debug, Clone)]
struct Scripted {
    method: &'static str,
    path: &'static str,
    status: u16,
    body: Value,
    retry_after: Option<&'static str>,
}

#[derive(Debug)]
struct State {
    instances: Vec<FakeInstance>,
    firewalls: Vec<Value>,
    rules: HashMap<String, Vec<Value>>,
    next: u64,
    page_cap: usize,
    boot_after: Duration,
    throttle: u32,
    throttle_retry_after: &'static str,
    script: VecDeque<Scripted>,
    locked_deletes: u32,
    create_delay: Option<Duration>,
    sold_out: Vec<(&'static str, &'static str)>,
    passwords: HashMap<String, String>,
    creates: u32,
}

impl Default for State {
    fn default() -> Self {
        Self {
            instances: Vec::new(),
            firewalls: Vec::new(),
            rules: HashMap::new(),
            next: 1,
            page_cap: 2,
            boot_after: Duration::from_millis(300),
            throttle: 0,
            throttle_retry_after: "1",
            script: VecDeque::new(),
            locked_deletes: 0,
            create_delay: None,
            sold_out: Vec::new(),
            passwords: HashMap::new(),
            creates: 0,
        }
    }
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

fn os_list() -> Vec<Value> {
    [
        (240, "Windows 2016 Standard x64", "windows"),
        (371, "Windows 2019 Standard x64", "windows"),
        (521, "Windows Core 2022 Standard x64", "windows"),
        (501, "Windows 2022 Standard x64", "windows"),
        (1765, "Windows 2022 Datacenter x64", "windows"),
        (2516, "Windows Core 2025 Standard x64", "windows"),
        (2514, "Windows 2025 Standard x64", "windows"),
        (1743, "Ubuntu 22.04 LTS x64", "ubuntu"),
        (2284, "Ubuntu 24.04 LTS x64", "ubuntu"),
        (477, "Debian 11 x64 (bullseye)", "debian"),
    ]
    .into_iter()
    .map(|(id, name, family)| json!({"id": id, "name": name, "arch": "x64", "family": family}))
    .collect()
}

fn plan_list() -> Vec<Value> {
    [
        ("vc2-1c-1gb", 1, 1024, 25, 5),
        ("vc2-1c-2gb", 1, 2048, 55, 10),
        ("vc2-2c-4gb", 2, 4096, 80, 20),
        ("vc2-4c-8gb", 4, 8192, 160, 40),
        ("vhf-8c-32gb", 8, 32768, 512, 192),
    ]
    .into_iter()
    .map(|(id, vcpu, ram, disk, cost)| {
        json!({"id": id, "vcpu_count": vcpu, "ram": ram, "disk": disk, "disk_count": 1,
               "bandwidth": 1024, "monthly_cost": cost, "type": "vc2",
               "locations": ["ewr", "ams", "fra"]})
    })
    .collect()
}

fn region_list() -> Vec<Value> {
    ["ewr", "ams", "fra", "lax"]
        .into_iter()
        .map(|id| json!({"id": id, "city": id, "country": "XX", "continent": "X", "options": []}))
        .collect()
}

fn error(status: u16, text: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"error": text, "status": status}))
}

impl State {
    fn view(&self, i: &FakeInstance, with_password: bool) -> Value {
        let booted = i.created.elapsed() >= self.boot_after;
        let mut v = json!({
            "id": i.id, "os": "x", "ram": 4096, "disk": 80,
            "main_ip": if booted { format!("203.0.113.{}", i.id.len() % 200 + 1) } else { "0.0.0.0".into() },
            "vcpu_count": 2, "region": i.region, "plan": i.plan,
            "date_created": "2026-11-25T10:00:00+00:00",
            "status": if booted { "active" } else { "pending" },
            "allowed_bandwidth": 1000, "netmask_v4": "", "gateway_v4": "0.0.0.0",
            "power_status": if i.halted { "stopped" } else { "running" },
            "server_status": if booted { "ok" } else { "none" },
            "v6_network": "", "v6_main_ip": "", "v6_network_size": 0,
            "label": i.label, "internal_ip": "", "kvm": "https://my.vultr.com/subs/vps/novnc/api.php?data=secret",
            "hostname": i.hostname, "os_id": i.os_id, "app_id": 0, "image_id": "",
            "firewall_group_id": i.firewall_group_id, "features": [], "tags": i.tags,
            "user_scheme": "root",
            "a_field_from_the_future": {"nested": [1, 2, 3]}
        });
        if with_password {
            v["default_password"] = json!(self.passwords[&i.id]);
        }
        v
    }

    fn paged(
        &self,
        key: &str,
        items: Vec<Value>,
        query: &HashMap<String, String>,
    ) -> ResponseTemplate {
        let per_page: usize = query
            .get("per_page")
            .and_then(|p| p.parse().ok())
            .unwrap_or(100);
        if per_page == 0 || per_page > 500 {
            return error(400, "per_page must be between 1 and 500");
        }
        let take = per_page.min(self.page_cap);
        let offset: usize = match query.get("cursor") {
            None => 0,
            Some(c) => match c.strip_prefix("bmV4dA-").and_then(|n| n.parse().ok()) {
                Some(n) => n,
                None => return error(400, "invalid cursor"),
            },
        };
        let total = items.len();
        let page: Vec<Value> = items.into_iter().skip(offset).take(take).collect();
        let next = if offset + take < total {
            format!("bmV4dA-{}", offset + take)
        } else {
            String::new()
        };
        ResponseTemplate::new(200).set_body_json(json!({
            key: page,
            "meta": {"total": total, "links": {"next": next, "prev": ""}}
        }))
    }

    fn handle(&mut self, req: &Request) -> ResponseTemplate {
        let method = req.method.as_str().to_owned();
        let Some(path) = req.url.path().strip_prefix("/v2") else {
            return error(404, "not found");
        };
        let path = path.to_owned();
        let query: HashMap<String, String> = req.url.query_pairs().into_owned().collect();
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if auth != format!("Bearer {KEY}") {
            return error(401, "Invalid API token.");
        }
        if self.throttle > 0 {
            self.throttle -= 1;
            return error(429, "rate limit exceeded")
                .insert_header("Retry-After", self.throttle_retry_after);
        }
        if let Some(pos) = self
            .script
            .iter()
            .position(|s| s.method == method && s.path == path)
        {
            let s = self.script.remove(pos).unwrap();
            let mut t = ResponseTemplate::new(s.status).set_body_json(s.body);
            if let Some(r) = s.retry_after {
                t = t.insert_header("Retry-After", r);
            }
            return t;
        }
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), segs.as_slice()) {
            ("GET", ["os"]) => self.paged("os", os_list(), &query),
            ("GET", ["plans"]) => self.paged("plans", plan_list(), &query),
            ("GET", ["regions"]) => self.paged("regions", region_list(), &query),
            ("GET", ["regions", r, "availability"]) => {
                if !region_list().iter().any(|v| v["id"] == *r) {
                    return error(404, "region not found");
                }
                let plans: Vec<Value> = plan_list()
                    .into_iter()
                    .map(|p| p["id"].clone())
                    .filter(|p| !self.sold_out.iter().any(|(sr, sp)| sr == r && p == sp))
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({"available_plans": plans}))
            }
            ("GET", ["instances"]) => {
                let items = self
                    .instances
                    .iter()
                    .filter(|i| query.get("label").is_none_or(|l| *l == i.label))
                    .map(|i| self.view(i, false))
                    .collect();
                self.paged("instances", items, &query)
            }
            ("POST", ["instances"]) => self.create(&req.body),
            ("GET", ["instances", id]) => match self.instances.iter().find(|i| i.id == *id) {
                Some(i) => ResponseTemplate::new(200)
                    .set_body_json(json!({"instance": self.view(i, false)})),
                None => error(404, "Invalid instance-id."),
            },
            ("DELETE", ["instances", id]) => {
                let Some(pos) = self.instances.iter().position(|i| i.id == *id) else {
                    return error(404, "Invalid instance-id.");
                };
                if self.instances[pos].delete_refusals > 0 {
                    self.instances[pos].delete_refusals -= 1;
                    return error(500, "Unable to destroy server: Server is currently locked");
                }
                self.instances.remove(pos);
                ResponseTemplate::new(204)
            }
            ("POST", ["instances", id, action @ ("reboot" | "halt" | "start")]) => {
                let Some(i) = self.instances.iter_mut().find(|i| i.id == *id) else {
                    return error(404, "Invalid instance-id.");
                };
                match *action {
                    "halt" => i.halted = true,
                    "start" => i.halted = false,
                    _ => {}
                }
                ResponseTemplate::new(204)
            }
            ("GET", ["firewalls"]) => self.paged("firewall_groups", self.firewalls.clone(), &query),
            ("POST", ["firewalls"]) => {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let id = format!("fw-{}", self.next);
                self.next += 1;
                let g = json!({"id": id, "description": body["description"], "date_created": "",
                    "date_modified": "", "instance_count": 0, "rule_count": 0, "max_rule_count": 50});
                self.firewalls.push(g.clone());
                ResponseTemplate::new(201).set_body_json(json!({"firewall_group": g}))
            }
            ("POST", ["firewalls", id, "rules"]) => {
                let Some(g) = self.firewalls.iter_mut().find(|g| g["id"] == *id) else {
                    return error(404, "firewall group not found");
                };
                g["rule_count"] = json!(g["rule_count"].as_u64().unwrap() + 1);
                let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                self.rules
                    .entry((*id).to_owned())
                    .or_default()
                    .push(body.clone());
                ResponseTemplate::new(201).set_body_json(json!({"firewall_rule": body}))
            }
            _ => error(404, "no such route in the fake"),
        }
    }

    fn create(&mut self, body: &[u8]) -> ResponseTemplate {
        let Ok(b) = serde_json::from_slice::<Value>(body) else {
            return error(400, "invalid json");
        };
        let region = b["region"].as_str().unwrap_or_default();
        let plan = b["plan"].as_str().unwrap_or_default();
        if !region_list().iter().any(|r| r["id"] == region) {
            return error(400, "Invalid region.");
        }
        if !plan_list().iter().any(|p| p["id"] == plan) {
            return error(400, "Invalid plan.");
        }
        let Some(os_id) = b["os_id"]
            .as_i64()
            .filter(|id| os_list().iter().any(|o| o["id"] == *id))
        else {
            return error(400, "Invalid os_id.");
        };
        if !b["backups"].is_string() {
            return error(400, "backups must be a string");
        }
        let id = format!("4f0f12e5-1f84-404f-aa84-{:012}", self.next);
        self.next += 1;
        self.creates += 1;
        self.passwords
            .insert(id.clone(), format!("v5{{Fkvb#{}", self.next));
        let inst = FakeInstance {
            id: id.clone(),
            label: b["label"].as_str().unwrap_or_default().to_owned(),
            tags: serde_json::from_value(b["tags"].clone()).unwrap_or_default(),
            region: region.to_owned(),
            plan: plan.to_owned(),
            os_id,
            hostname: b["hostname"].as_str().unwrap_or_default().to_owned(),
            firewall_group_id: b["firewall_group_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            created: Instant::now(),
            halted: false,
            delete_refusals: self.locked_deletes,
        };
        let view = self.view(&inst, true);
        self.instances.push(inst);
        let mut t = ResponseTemplate::new(202).set_body_json(json!({"instance": view}));
        if let Some(d) = self.create_delay {
            t = t.set_delay(d);
        }
        t
    }
}

impl Respond for Fake {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.lock().unwrap().handle(request)
    }
}

impl Fake {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.0.lock().unwrap())
    }
}

async fn start(fake: &Fake) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    server
}

fn builder(server: &MockServer) -> VultrBuilder {
    VultrBuilder::new()
        .with_api_key(KEY)
        .with_base_url(format!("{}/v2", server.uri()))
        .with_allow_http(true)
        .with_timeout(Duration::from_secs(5))
        .with_retries(3, Duration::from_millis(5), Duration::from_millis(30))
        .with_delete_retries(5, Duration::from_millis(5))
}

fn provider(server: &MockServer) -> Vultr {
    builder(server).build().unwrap()
}

fn spec(label: &str) -> InstanceSpec {
    InstanceSpec::new(
        label,
        "ewr",
        "vc2-2c-4gb",
        nemordp_core::cloud::ImageRef::new(
            "501",
            "Windows 2022 Standard x64",
            OsKind::WindowsServer,
        ),
    )
}

// ----- the OpenAPI check -----

fn load_spec() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/specs/vultr/vultr-api-v2.openapi.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the Vultr OpenAPI spec is missing at {} ({e}); these tests expect shared/ beside the \
             workspace clone",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("the Vultr OpenAPI spec is valid JSON")
}

fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

fn json_type_ok(schema_type: &str, v: &Value) -> bool {
    match schema_type {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .trim_start_matches("#/")
            .split('/')
            .fold(spec, |acc, part| &acc[part]),
        None => v,
    }
}

/// Checks every request the server received: method + path template exist in the spec,
/// query parameters are declared, and JSON bodies only use declared fields of the right type.
async fn check_against_spec(server: &MockServer) -> usize {
    let spec = load_spec();
    let paths = spec["paths"].as_object().unwrap();
    let requests = server.received_requests().await.unwrap();
    for req in &requests {
        let method = req.method.as_str().to_lowercase();
        let path = req
            .url
            .path()
            .strip_prefix("/v2")
            .expect("requests go to the /v2 base");
        let (template, item) = paths
            .iter()
            .find(|(t, item)| template_matches(t, path) && item.get(&method).is_some())
            .unwrap_or_else(|| panic!("{method} {path} is not in the Vultr spec"));
        let op = &item[&method];
        let params: Vec<&Value> = item
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .chain(op.get("parameters").and_then(Value::as_array))
            .flatten()
            .map(|p| resolve(&spec, p))
            .collect();
        for (name, _) in req.url.query_pairs() {
            assert!(
                params
                    .iter()
                    .any(|p| p["in"] == "query" && p["name"] == *name),
                "query parameter {name} of {method} {template} is not in the spec"
            );
        }
        if req.body.is_empty() {
            continue;
        }
        let body: Value = serde_json::from_slice(&req.body).expect("request bodies are JSON");
        let schema = resolve(
            &spec,
            &op["requestBody"]["content"]["application/json"]["schema"],
        );
        let props = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {template} takes no JSON body in the spec"));
        for (field, value) in body.as_object().expect("bodies are objects") {
            let prop = resolve(
                &spec,
                props.get(field).unwrap_or_else(|| {
                    panic!("{method} {template}: field {field} is not in the spec")
                }),
            );
            let ty = prop["type"].as_str().unwrap_or_default();
            assert!(
                json_type_ok(ty, value),
                "{method} {template}: field {field} is {value}, the spec says {ty}"
            );
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap();
            assert!(
                body.get(required).is_some(),
                "{method} {template}: required field {required} missing"
            );
        }
    }
    requests.len()
}

fn count(requests: &[Request], method: &str, path: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.method.as_str() == method && r.url.path() == format!("/v2{path}"))
        .count()
}

// ----- tests -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_kit_passes_on_the_fake() {
    let fake = Fake::default();
    fake.with(|s| s.locked_deletes = 1);
    let server = start(&fake).await;
    let vultr = provider(&server);
    for os in [OsKind::WindowsServer, OsKind::UbuntuDesktop] {
        let cfg = CloudKitConfig::new("ewr", "vc2-1c-2gb", os, Duration::from_secs(5));
        run_all(&vultr, &cfg).await;
    }
    assert!(fake.with(|s| s.instances.is_empty()), "the kit cleaned up");
    assert!(fake.with(|s| s.creates) >= 7);
    assert!(check_against_spec(&server).await > 50);
}

#[tokio::test]
async fn create_sends_a_spec_shaped_body_and_captures_the_password_once() {
    let fake = Fake::default();
    let server = start(&fake).await;
    let vultr = provider(&server);
    let image = vultr
        .resolve_image(OsKind::WindowsServer, None)
        .await
        .unwrap();
    assert_eq!(
        image.name, "Windows 2022 Standard x64",
        "never the Core image listed first"
    );
    assert_eq!(image.id, "501");
    let label = "nemordp-0192f7a4-0000-7000-8000-000000000001";
    let s = spec(label)
        .with_hostname("rdp-1")
        .with_tag("order-1")
        .with_user_data("<powershell>echo hi</powershell>");
    let created = vultr.create_instance(&s).await.unwrap();
    let id = created.id.clone();
    let wanted = fake.with(|st| st.passwords[id.as_str()].clone());
    assert_eq!(
        created
            .admin_password
            .as_ref()
            .map(|p| p.expose_secret().to_owned()),
        Some(wanted.clone())
    );
    assert!(!format!("{created:?}").contains(&wanted));
    assert_eq!(created.label, label);
    assert_eq!(created.address, None, "0.0.0.0 is no address");
    assert_eq!(created.status, InstanceStatus::Pending);
    assert!(created.created_at.is_some());

    let got = vultr.get_instance(&id).await.unwrap();
    assert!(got.admin_password.is_none());
    assert!(!got.is_ready_for_probe());

    // the body: strings where Vultr wants strings, base64 user data, label as a tag
    let requests = server.received_requests().await.unwrap();
    let create = requests
        .iter()
        .find(|r| r.method.as_str() == "POST" && r.url.path() == "/v2/instances")
        .unwrap();
    let body: Value = serde_json::from_slice(&create.body).unwrap();
    assert_eq!(body["backups"], "disabled");
    assert_eq!(body["activation_email"], false);
    assert_eq!(body["os_id"], 501);
    assert_eq!(body["label"], label);
    assert_eq!(body["hostname"], "rdp-1");
    assert_eq!(body["tags"], json!([label, "order-1"]));
    assert!(
        body["firewall_group_id"]
            .as_str()
            .is_some_and(|f| !f.is_empty())
    );
    let ud = base64::engine::general_purpose::STANDARD
        .decode(body["user_data"].as_str().unwrap())
        .unwrap();
    assert_eq!(ud, b"<powershell>echo hi</powershell>");

    // real time: the fake boots after 300 ms
    tokio::time::sleep(Duration::from_millis(400)).await;
    let booted = vultr.get_instance(&id).await.unwrap();
    assert_eq!(booted.status, InstanceStatus::Running);
    assert!(booted.is_ready_for_probe());
    assert_eq!(
        vultr.find_one_by_label(label).await.unwrap().unwrap().id,
        id
    );
    check_against_spec(&server).await;
}

#[tokio::test]
async fn listing_walks_every_page_and_find_by_label_is_exact() {
    let fake = Fake::default();
    let server = start(&fake).await;
    let vultr = provider(&server);
    for n in 0..5 {
        vultr
            .create_instance(&spec(&format!("nemordp-list-{n}")))
            .await
            .unwrap();
    }
    let first = vultr.list_instances(PageRequest::first(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert!(first.next.is_some());
    let all = vultr.list_all_instances().await.unwrap();
    assert_eq!(all.len(), 5);
    // the fake serves at most 2 per page, so this walked 3 pages with per_page 500
    let requests = server.received_requests().await.unwrap();
    assert!(count(&requests, "GET", "/instances") >= 4);
    assert!(
        requests
            .iter()
            .filter(|r| r.url.path() == "/v2/instances" && r.method.as_str() == "GET")
            .all(|r| r
                .url
                .query_pairs()
                .any(|(k, v)| k == "per_page" && v.parse::<u32>().unwrap() <= 500))
    );
    assert_eq!(
        vultr.find_by_label("nemordp-list-3").await.unwrap().len(),
        1
    );
    assert!(
        vultr
            .find_by_label("nemordp-list")
            .await
            .unwrap()
            .is_empty()
    );
    check_against_spec(&server).await;
}

#[tokio::test]
async fn catalog_is_paged_cached_and_validated() {
    let fake = Fake::default();
    fake.with(|s| s.sold_out.push(("ams", "vc2-4c-8gb")));
    let server = start(&fake).await;
    let vultr = provider(&server);
    let ubuntu = vultr
        .resolve_image(OsKind::UbuntuDesktop, None)
        .await
        .unwrap();
    assert_eq!(ubuntu.name, "Ubuntu 24.04 LTS x64");
    assert_eq!(
        vultr
            .resolve_image(OsKind::UbuntuDesktop, Some("1743"))
            .await
            .unwrap()
            .name,
        "Ubuntu 22.04 LTS x64"
    );
    let core = vultr
        .resolve_image(
            OsKind::WindowsServer,
            Some("Windows Core 2022 Standard x64"),
        )
        .await
        .unwrap_err();
    assert_eq!(core.kind(), ErrorKind::NotFound);
    let wrong_os = vultr
        .resolve_image(OsKind::WindowsServer, Some("2284"))
        .await
        .unwrap_err();
    assert_eq!(wrong_os.kind(), ErrorKind::NotFound);

    let size = vultr.resolve_size("ewr", "vhf-8c-32gb").await.unwrap();
    assert_eq!((size.vcpus, size.ram_mib, size.disk_gib), (8, 32768, 512));
    let e = vultr.resolve_size("ewr", "vc2-99c").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("vc2-99c"), "{e}");
    let e = vultr.resolve_size("xxx", "vc2-2c-4gb").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("xxx"), "{e}");
    let e = vultr.resolve_size("ams", "vc2-4c-8gb").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected);
    assert!(e.to_string().contains("sold out"), "{e}");
    let e = vultr.resolve_size("lax", "vc2-4c-8gb").await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Rejected,
        "plan not in the region's locations"
    );

    // a bad plan is named before anything is bought
    let mut bad = spec("nemordp-bad");
    bad.size = "vc2-99c".into();
    let e = vultr.create_instance(&bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("vc2-99c"));

    let requests = server.received_requests().await.unwrap();
    assert_eq!(count(&requests, "POST", "/instances"), 0);
    // 10 images / 5 plans / 4 regions at 2 per page, each list walked once
    assert_eq!(count(&requests, "GET", "/os"), 5);
    assert_eq!(count(&requests, "GET", "/plans"), 3);
    assert_eq!(count(&requests, "GET", "/regions"), 2);
    check_against_spec(&server).await;
}

#[tokio::test]
async fn throttling_honours_retry_after_and_is_retried_on_safe_calls() {
    let fake = Fake::default();
    let server = start(&fake).await;
    let vultr = provider(&server);
    let created = vultr.create_instance(&spec("nemordp-t")).await.unwrap();
    fake.with(|s| s.throttle = 2);
    vultr.get_instance(&created.id).await.unwrap();

    let once = builder(&server)
        .with_retries(0, Duration::from_millis(5), Duration::from_millis(5))
        .build()
        .unwrap();
    fake.with(|s| s.throttle = 1);
    let e = once.get_instance(&created.id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));

    fake.with(|s| {
        s.throttle = 1;
        s.throttle_retry_after = "Wed, 21 Oct 2015 07:28:00 GMT";
    });
    let e = once.get_instance(&created.id).await.unwrap_err();
    assert_eq!(
        e.retry_after(),
        Some(Duration::ZERO),
        "a past HTTP-date means now"
    );

    fake.with(|s| {
        s.script.push_back(Scripted {
            method: "GET",
            path: "/instances",
            status: 503,
            body: json!({"error": "service unavailable", "status": 503}),
            retry_after: Some("2"),
        });
    });
    let e = once
        .list_instances(PageRequest::first(10))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    check_against_spec(&server).await;
}

#[tokio::test]
async fn create_is_sent_once_whatever_happens() {
    let fake = Fake::default();
    let server = start(&fake).await;
    let vultr = provider(&server);
    vultr.resolve_size("ewr", "vc2-2c-4gb").await.unwrap();
    let posts = || async {
        count(
            &server.received_requests().await.unwrap(),
            "POST",
            "/instances",
        )
    };

    // 429 on create: provably not processed, not retried here
    fake.with(|s| {
        s.script.push_back(Scripted {
            method: "POST",
            path: "/instances",
            status: 429,
            body: json!({"error": "rate limit exceeded", "status": 429}),
            retry_after: Some("3"),
        });
    });
    let e = vultr
        .create_instance(&spec("nemordp-c1"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    assert_eq!(posts().await, 1);

    // 500 on create: the outcome is unknown
    fake.with(|s| {
        s.script.push_back(Scripted {
            method: "POST",
            path: "/instances",
            status: 500,
            body: json!({"error": "internal error", "status": 500}),
            retry_after: None,
        });
    });
    let e = vultr
        .create_instance(&spec("nemordp-c2"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Ambiguous);
    assert_eq!(posts().await, 2);

    // a timeout after the fake created the machine: ambiguous, and the label finds it
    fake.with(|s| s.create_delay = Some(Duration::from_millis(600)));
    let slow = builder(&server)
        .with_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let e = slow.create_instance(&spec("nemordp-c3")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Ambiguous, "{e}");
    assert_eq!(posts().await, 3);
    fake.with(|s| s.create_delay = None);
    let found = vultr.find_by_label("nemordp-c3").await.unwrap();
    assert_eq!(found.len(), 1);
    assert!(found[0].admin_password.is_none());

    // a rejected create is Rejected, with Vultr's text
    let mut bad = spec("nemordp-c4");
    bad.image = nemordp_core::cloud::ImageRef::new("999", "gone", OsKind::WindowsServer);
    let e = vultr.create_instance(&bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected);
    assert!(e.to_string().contains("Invalid os_id"), "{e}");
    check_against_spec(&server).await;
}

#[tokio::test]
async fn error_bodies_map_to_kinds_and_never_show_the_key() {
    let fake = Fake::default();
    let server = start(&fake).await;
    let vultr = provider(&server);
    let id = InstanceId::new("4f0f12e5-1f84-404f-aa84-000000000999");
    let cases = [
        (401, ErrorKind::Unauthenticated),
        (403, ErrorKind::PermissionDenied),
        (400, ErrorKind::Rejected),
        (422, ErrorKind::Rejected),
    ];
    for (status, kind) in cases {
        fake.with(|s| {
            s.script.push_back(Scripted {
                method: "GET",
                path: "/instances/4f0f12e5-1f84-404f-aa84-000000000999",
                status,
                body: json!({"error": format!("nope, key {KEY} refused"), "status": status}),
                retry_after: None,
            });
        });
        let e = vultr.get_instance(&id).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{status}: {e}");
        assert!(!e.to_string().contains(KEY), "{e}");
        assert!(!format!("{e:?}").contains(KEY), "{e:?}");
        assert!(e.to_string().contains("nope"), "{e}");
        if status == 401 || status == 403 {
            assert!(e.to_string().contains("access list"), "{e}");
        }
    }
    let e = vultr.get_instance(&id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.backend(), "vultr");

    // 401 is never retried
    let before = server.received_requests().await.unwrap().len();
    let wrong = builder(&server).with_api_key("wrong").build().unwrap();
    let e = wrong.get_instance(&id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert_eq!(server.received_requests().await.unwrap().len(), before + 1);

    // a body that is not Vultr's error shape still maps by status
    fake.with(|s| {
        s.script.push_back(Scripted {
            method: "GET",
            path: "/instances",
            status: 502,
            body: json!("<html>bad gateway</html>"),
            retry_after: None,
        });
    });
    let once = builder(&server)
        .with_retries(0, Duration::from_millis(1), Duration::from_millis(1))
        .build()
        .unwrap();
    assert_eq!(
        once.list_instances(PageRequest::first(5))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Unavailable
    );
    check_against_spec(&server).await;
}

#[tokio::test]
async fn delete_retries_the_fresh_lock_and_treats_404_as_done() {
    let fake = Fake::default();
    fake.with(|s| s.locked_deletes = 2);
    let server = start(&fake).await;
    let vultr = provider(&server);
    let created = vultr.create_instance(&spec("nemordp-d")).await.unwrap();
    let path = format!("/instances/{}", created.id);
    vultr.delete_instance(&created.id).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(count(&requests, "DELETE", &path), 3);
    vultr.delete_instance(&created.id).await.unwrap();
    assert_eq!(
        vultr.get_instance(&created.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // still locked after every attempt: Unavailable, for the caller to retry later
    fake.with(|s| s.locked_deletes = 10);
    let stuck = vultr.create_instance(&spec("nemordp-d2")).await.unwrap();
    let e = vultr.delete_instance(&stuck.id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.to_string().contains("locked"));
    check_against_spec(&server).await;
}

#[tokio::test]
async fn power_actions_and_status() {
    let fake = Fake::default();
    fake.with(|s| s.boot_after = Duration::ZERO);
    let server = start(&fake).await;
    let vultr = provider(&server);
    let created = vultr.create_instance(&spec("nemordp-p")).await.unwrap();
    assert_eq!(created.status, InstanceStatus::Running);
    vultr.stop(&created.id).await.unwrap();
    assert_eq!(
        vultr.get_instance(&created.id).await.unwrap().status,
        InstanceStatus::Stopped
    );
    vultr.start(&created.id).await.unwrap();
    vultr.reboot(&created.id).await.unwrap();
    assert!(
        vultr
            .get_instance(&created.id)
            .await
            .unwrap()
            .is_ready_for_probe()
    );
    check_against_spec(&server).await;
}

#[tokio::test]
async fn firewall_group_is_created_once_and_reused() {
    let fake = Fake::default();
    let server = start(&fake).await;
    let vultr = provider(&server);
    let a = vultr.create_instance(&spec("nemordp-f1")).await.unwrap();
    vultr.create_instance(&spec("nemordp-f2")).await.unwrap();
    let customer = spec("nemordp-f3").with_rdp_source("198.51.100.7".parse().unwrap());
    vultr.create_instance(&customer).await.unwrap();
    // a fresh provider (empty cache) finds the groups by description
    let again = provider(&server);
    again.create_instance(&spec("nemordp-f4")).await.unwrap();

    let (groups, rules, fw_of_a) = fake.with(|s| {
        let a = s.instances.iter().find(|i| i.id == a.id.as_str()).unwrap();
        (
            s.firewalls.clone(),
            s.rules.clone(),
            a.firewall_group_id.clone(),
        )
    });
    assert_eq!(groups.len(), 2, "{groups:?}");
    let open = groups
        .iter()
        .find(|g| g["description"] == "nemordp-rdp")
        .unwrap();
    let mine = groups
        .iter()
        .find(|g| g["description"] == "nemordp-rdp-198.51.100.7")
        .unwrap();
    assert_eq!(fw_of_a, open["id"].as_str().unwrap());
    let open_rules = &rules[open["id"].as_str().unwrap()];
    assert_eq!(
        open_rules,
        &vec![
            json!({"ip_type": "v4", "protocol": "tcp", "port": "3389", "subnet": "0.0.0.0",
                     "subnet_size": 0, "notes": "nemordp rdp"})
        ]
    );
    let my_rules = &rules[mine["id"].as_str().unwrap()];
    assert_eq!(my_rules.len(), 1);
    assert_eq!(my_rules[0]["subnet"], "198.51.100.7");
    assert_eq!(my_rules[0]["subnet_size"], 32);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(count(&requests, "POST", "/firewalls"), 2);

    // without the firewall nothing is attached
    let bare = builder(&server).with_firewall(false).build().unwrap();
    bare.create_instance(&spec("nemordp-f5")).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    let last = requests
        .iter()
        .rev()
        .find(|r| r.method.as_str() == "POST" && r.url.path() == "/v2/instances")
        .unwrap();
    let body: Value = serde_json::from_slice(&last.body).unwrap();
    assert!(body.get("firewall_group_id").is_none());
    check_against_spec(&server).await;
}

// ----- the spec check itself catches bad requests -----

async fn send_raw(server: &MockServer, method: reqwest::Method, path: &str, body: Option<Value>) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}/v2{path}", server.uri()))
        .bearer_auth(KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap();
}

#[tokio::test]
#[should_panic(expected = "field backups is false, the spec says string")]
async fn spec_check_catches_a_wrongly_typed_create_field() {
    let server = start(&Fake::default()).await;
    let body = json!({"region": "ewr", "plan": "vc2-2c-4gb", "os_id": 501, "backups": false});
    send_raw(&server, reqwest::Method::POST, "/instances", Some(body)).await;
    check_against_spec(&server).await;
}

#[tokio::test]
#[should_panic(expected = "field password is not in the spec")]
async fn spec_check_catches_an_unknown_create_field() {
    let server = start(&Fake::default()).await;
    let body = json!({"region": "ewr", "plan": "vc2-2c-4gb", "os_id": 501, "password": "x"});
    send_raw(&server, reqwest::Method::POST, "/instances", Some(body)).await;
    check_against_spec(&server).await;
}

#[tokio::test]
#[should_panic(expected = "post /instances/abc/restart is not in the Vultr spec")]
async fn spec_check_catches_an_unknown_path() {
    let server = start(&Fake::default()).await;
    send_raw(
        &server,
        reqwest::Method::POST,
        "/instances/abc/restart",
        None,
    )
    .await;
    check_against_spec(&server).await;
}

// ----- the real provisioner on the fake -----

#[derive(Debug)]
struct AlwaysRdp;

#[nemordp_core::async_trait]
impl nemordp_core::rdp::probe::RdpProbe for AlwaysRdp {
    async fn probe(&self, _addr: std::net::SocketAddr) -> nemordp_core::rdp::probe::ProbeOutcome {
        nemordp_core::rdp::probe::ProbeOutcome::Rdp(
            nemordp_core::rdp::probe::Negotiation::Selected(2),
        )
    }
}

/// What one provisioning run on the fake produced.
struct Delivered {
    details: nemordp_core::notify::ConnectionDetails,
    vultr_password: String,
    create_body: Value,
}

/// Provisions one Windows machine through the real Provisioner on the fake, with `vultr`
/// configured by `configure`.
async fn provision_one(configure: impl FnOnce(VultrBuilder) -> VultrBuilder) -> Delivered {
    use nemordp_core::{
        Asset, Currency, Money,
        order::{Customer, OrderState},
        plan::{Plan, PlanCatalog},
        provisioner::{Provisioner, ProvisionerConfig},
        seal::Sealer,
        secrecy::SecretString,
        sim::{notify::RecordingNotifier, payments::SimPayments, store::MemoryStore},
    };
    let fake = Fake::default();
    fake.with(|s| s.boot_after = Duration::from_millis(200));
    let server = start(&fake).await;
    let payments = SimPayments::new(Asset::Fiat(Currency::Usd), SecretString::from("whsec_t"));
    let mut config = ProvisionerConfig::default();
    config.provider_poll_initial = Duration::from_millis(50);
    config.provider_poll_max = Duration::from_millis(100);
    config.probe_interval = Duration::from_millis(50);
    config.idle_poll = Duration::from_millis(10);
    config.retry_initial = Duration::from_millis(20);
    config.retry_max = Duration::from_millis(100);
    config.lookup_interval = Duration::from_millis(50);
    let catalog = PlanCatalog::from_plans([Plan::new(
        "win",
        "vultr",
        OsKind::WindowsServer,
        "ewr",
        "vc2-2c-4gb",
        Money::parse_major(Currency::Usd, "10").unwrap(),
    )])
    .unwrap();
    let provisioner = Provisioner::builder()
        .store(Arc::new(MemoryStore::new()))
        .provider(Arc::new(configure(builder(&server)).build().unwrap()))
        .probe(Arc::new(AlwaysRdp))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(RecordingNotifier::new()))
        .catalog(catalog)
        .sealer(Sealer::ephemeral())
        .config(config)
        .build()
        .unwrap();
    let order = provisioner
        .place_order(&"win".into(), Customer::new("c1"))
        .await
        .unwrap();
    let payment = provisioner.open_payment(order.id, "sim").await.unwrap();
    payments.pay_in_full(&payment.reference).unwrap();
    provisioner.refresh_payment(payment.id).await.unwrap();
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        provisioner.run_until_settled(order.id),
    )
    .await
    .expect("settles within 30 s")
    .unwrap();
    assert_eq!(done.state, OrderState::Active, "{done:?}");
    let details = provisioner.connection_details(order.id).await.unwrap();
    let (instance, password) = fake.with(|s| {
        assert_eq!(s.instances.len(), 1, "exactly one machine bought");
        let i = s.instances[0].clone();
        let p = s.passwords[&i.id].clone();
        (i, p)
    });
    assert_eq!(instance.label, order.instance_label());
    let requests = server.received_requests().await.unwrap();
    let create = requests
        .iter()
        .find(|r| r.method.as_str() == "POST" && r.url.path() == "/v2/instances")
        .unwrap();
    let create_body: Value = serde_json::from_slice(&create.body).unwrap();
    assert!(details.host.starts_with("203.0.113."), "{}", details.host);
    check_against_spec(&server).await;
    Delivered {
        details,
        vultr_password: password,
        create_body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provisioner_delivers_the_vultr_create_password_by_default() {
    // Vultr does not document that Windows images run user-data, so by default nothing relies
    // on it: the customer gets the `default_password` from the create response.
    let got = provision_one(|b| b).await;
    assert!(
        got.create_body.get("user_data").is_none(),
        "no first-boot script is sent by default: {}",
        got.create_body
    );
    assert_eq!(got.details.password.expose_secret(), got.vultr_password);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_user_data_the_provisioner_delivers_its_own_password() {
    let got = provision_one(|b| b.with_user_data(true)).await;
    let script = base64::engine::general_purpose::STANDARD
        .decode(
            got.create_body["user_data"]
                .as_str()
                .expect("a first-boot script"),
        )
        .unwrap();
    let script = String::from_utf8(script).unwrap();
    let ours = got.details.password.expose_secret();
    assert!(!ours.is_empty());
    assert_ne!(ours, got.vultr_password);
    assert!(
        script.contains(ours),
        "the delivered password is the one the script sets"
    );
}

// ----- the same kit against the real Vultr, only on request (it buys machines) -----

#[allow(clippy::unused_async)]
async fn live_setup() -> Option<(Vultr, CloudKitConfig)> {
    if std::env::var("NEMORDP_VULTR_LIVE_CONFORMANCE").as_deref() != Ok("1") {
        eprintln!(
            "live Vultr conformance skipped: set NEMORDP_VULTR_LIVE_CONFORMANCE=1 and \
             VULTR_API_KEY to run it (it creates and deletes billed machines)"
        );
        return None;
    }
    let vultr = VultrBuilder::from_env()
        .build()
        .expect("VULTR_API_KEY must be set for the live conformance run");
    let region = std::env::var("NEMORDP_VULTR_REGION").unwrap_or_else(|_| "ewr".into());
    let size = std::env::var("NEMORDP_VULTR_PLAN").unwrap_or_else(|_| "vc2-2c-4gb".into());
    let cfg = CloudKitConfig::new(
        region,
        size,
        OsKind::WindowsServer,
        Duration::from_secs(120),
    );
    Some((vultr, cfg))
}

mod live {
    nemordp_core::conformance_cloud!(super::live_setup);
}
