#![cfg(feature = "contabo")]
//! The Contabo provider against a stateful fake Contabo: an OpenID Connect token endpoint and
//! the API (two wiremock servers sharing one state). The fake behaves per the spec: it
//! requires a bearer token it issued and has not expired, a UUID `x-request-id` on every
//! call, password secrets that meet Contabo's rule, `rootPassword` as a secret id; it answers
//! 201 `data[0]` to creates, walks statuses provisioning → installing → running, pages with
//! `page`/`size`/`_pagination`, and errs with `{"statusCode", "message"}` (string or list).
//! Every request the client sends is checked against the OpenAPI spec in
//! `shared/specs/contabo/openapi.yaml`.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use nemordp_core::{
    CloudProvider, CloudProviderExt, ErrorKind, InstanceId,
    cloud::{ImageRef, InstanceSpec, InstanceStatus, PageRequest, Removal},
    plan::OsKind,
    secrecy::{ExposeSecret, SecretString},
    testkit::cloud::{CloudKitConfig, run_all},
};
use nemordp_providers::contabo::{Contabo, ContaboBuilder, ContaboProduct};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

const CLIENT_ID: &str = "nemordp-test-client";
const CLIENT_SECRET: &str = "client-secret-7f3a9";
const API_USER: &str = "ops@example.com";
const API_PASSWORD: &str = "api-Password-42!";
const TOKEN_PATH: &str = "/auth/realms/contabo/protocol/openid-connect/token";
const UBUNTU_2404: &str = "d64d5c6c-9dda-4e38-8174-0ee282474d8a";
const UBUNTU_2204: &str = "afecbb85-e2fc-46f0-9684-b46b1faf00bb";

// ----- the fake -----

#[derive(Debug, Clone)]
struct FakeInstance {
    id: i64,
    display_name: String,
    region: String,
    product: String,
    image: String,
    period: i64,
    root_password: Option<i64>,
    user_data: Option<String>,
    default_user: String,
    created: Instant,
    stopped: bool,
    cancel_date: Option<String>,
    /// A status the fake reports instead of the progression.
    forced: Option<(&'static str, &'static str)>,
    reinstalls: u32,
}

#[derive(Debug, Clone)]
struct Scripted {
    method: &'static str,
    path: String,
    status: u16,
    body: Value,
    retry_after: Option<&'static str>,
}

#[derive(Debug)]
struct State {
    instances: Vec<FakeInstance>,
    /// secret id → (name, value)
    secrets: HashMap<i64, (String, String)>,
    /// ids of secrets of type `ssh`
    ssh_secrets: HashSet<i64>,
    deleted_secrets: Vec<i64>,
    next_id: i64,
    /// access token → expiry
    tokens: HashMap<String, Instant>,
    refresh_tokens: HashSet<String>,
    token_lifetime: u64,
    grants: Vec<String>,
    revoked: bool,
    unauthorized: u32,
    page_cap: usize,
    installing_after: Duration,
    running_after: Duration,
    throttle: u32,
    throttle_retry_after: Option<&'static str>,
    script: VecDeque<Scripted>,
    create_delay: Option<Duration>,
    creates: u32,
}

impl Default for State {
    fn default() -> Self {
        Self {
            instances: Vec::new(),
            secrets: HashMap::new(),
            ssh_secrets: HashSet::new(),
            deleted_secrets: Vec::new(),
            next_id: 100_001,
            tokens: HashMap::new(),
            refresh_tokens: HashSet::new(),
            token_lifetime: 300,
            grants: Vec::new(),
            revoked: false,
            unauthorized: 0,
            page_cap: 2,
            installing_after: Duration::from_millis(100),
            running_after: Duration::from_millis(300),
            throttle: 0,
            throttle_retry_after: None,
            script: VecDeque::new(),
            create_delay: None,
            creates: 0,
        }
    }
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

fn images() -> Vec<Value> {
    [
        (
            "0b8b3a0c-6f1e-4b2a-9e43-1c7a3c4a1a01",
            "ubuntu-20.04",
            "Linux",
            "20.04",
        ),
        (
            "1e1c5a9d-3a0e-4c69-8d7e-2f4b5a6c7d02",
            "debian-12",
            "Linux",
            "12",
        ),
        (UBUNTU_2204, "ubuntu-22.04", "Linux", "22.04"),
        (
            "2a3b4c5d-6e7f-4a1b-8c2d-3e4f5a6b7c03",
            "windows-server-2022-se",
            "Windows",
            "2022",
        ),
        (UBUNTU_2404, "ubuntu-24.04", "Linux", "24.04"),
        (
            "3b4c5d6e-7f8a-4b2c-9d3e-4f5a6b7c8d04",
            "rockylinux-9",
            "Linux",
            "9",
        ),
        (
            "4c5d6e7f-8a9b-4c3d-8e4f-5a6b7c8d9e05",
            "archlinux",
            "Linux",
            "rolling",
        ),
    ]
    .into_iter()
    .map(|(id, name, os, version)| {
        json!({"imageId": id, "tenantId": "DE", "customerId": "54321", "name": name,
               "description": name, "url": "", "sizeMb": 0, "uploadedSizeMb": 0,
               "osType": os, "version": version, "format": "qcow2", "status": "downloaded",
               "errorMessage": "", "standardImage": true,
               "creationDate": "2024-01-01T00:00:00Z", "lastModifiedDate": "2024-01-01T00:00:00Z",
               "tags": []})
    })
    .collect()
}

const PRODUCTS: [&str; 5] = ["V91", "V92", "V94", "V97", "V8"];
const REGIONS: [&str; 9] = [
    "EU",
    "US-central",
    "US-east",
    "US-west",
    "SIN",
    "UK",
    "AUS",
    "JPN",
    "IND",
];

fn error(status: u16, message: impl Into<Value>) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"statusCode": status, "message": message.into()}))
}

/// Decodes an `application/x-www-form-urlencoded` body.
fn form(body: &[u8]) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                    match u8::from_str_radix(hex, 16) {
                        Ok(v) => {
                            out.push(v);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn valid_request_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    let hex = |s: &str| s.chars().all(|c| c.is_ascii_hexdigit());
    parts.len() == 5
        && [8, 4, 4, 4, 12]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && hex(p))
        && matches!(parts[2].as_bytes()[0], b'0'..=b'5')
        && matches!(
            parts[3].as_bytes()[0],
            b'0' | b'8' | b'9' | b'a' | b'b' | b'A' | b'B'
        )
}

/// Contabo's password rule, as the fake enforces it.
fn password_ok(p: &str) -> bool {
    let digits = p.chars().filter(char::is_ascii_digit).count();
    let specials = p.chars().filter(|c| "!@#$^&*?_~".contains(*c)).count();
    p.len() >= 8
        && p.chars().any(|c| c.is_ascii_uppercase())
        && p.chars().any(|c| c.is_ascii_lowercase())
        && ((digits >= 1 && specials >= 2) || (digits >= 3 && specials >= 1))
}

impl State {
    fn status_of(&self, i: &FakeInstance) -> (&'static str, &'static str) {
        if let Some(f) = i.forced {
            return f;
        }
        let age = i.created.elapsed();
        if age < self.installing_after {
            ("provisioning", "")
        } else if age < self.running_after {
            ("installing", "")
        } else if i.stopped {
            ("stopped", "")
        } else {
            ("running", "")
        }
    }

    fn view(&self, i: &FakeInstance) -> Value {
        let (status, error_message) = self.status_of(i);
        let ip = if status == "provisioning" {
            String::new()
        } else {
            format!("203.0.113.{}", i.id % 200 + 1)
        };
        json!({
            "tenantId": "DE", "customerId": "54321", "additionalIps": [],
            "name": format!("vmd{}", i.id), "displayName": i.display_name,
            "instanceId": i.id, "dataCenter": "European Union 1", "region": i.region,
            "regionName": "European Union", "productId": i.product, "imageId": i.image,
            "ipConfig": {"v4": {"ip": ip, "netmaskCidr": 20, "gateway": "203.0.113.254"},
                         "v6": {"ip": "2001:db8::10", "netmaskCidr": 64, "gateway": "fe80::1"}},
            "macAddress": "F2:65:50:F3:63:A1", "ramMb": 8192, "cpuCores": 4, "osType": "Linux",
            "diskMb": 76800, "sshKeys": [], "createdDate": "2026-11-25T10:00:00.000Z",
            "cancelDate": i.cancel_date.clone().unwrap_or_default(), "status": status,
            "vHostId": 73395, "vHostNumber": 1001, "vHostName": "m1000", "addOns": [],
            "errorMessage": error_message, "productType": "nvme", "productName": "VPS 10 NVMe",
            "defaultUser": i.default_user, "aFieldFromTheFuture": {"nested": [1, 2]}
        })
    }

    fn paged(
        &self,
        path: &str,
        items: Vec<Value>,
        query: &HashMap<String, String>,
    ) -> ResponseTemplate {
        let parse = |k: &str, d: usize| query.get(k).map_or(Some(d), |v| v.parse::<usize>().ok());
        let (Some(page), Some(size)) = (parse("page", 1), parse("size", 10)) else {
            return error(400, "page and size must be integers");
        };
        if page == 0 || size == 0 {
            return error(
                400,
                vec![
                    "page must not be less than 1",
                    "size must not be less than 1",
                ],
            );
        }
        let size = size.min(self.page_cap);
        let total = items.len();
        let pages = total.div_ceil(size).max(1);
        let data: Vec<Value> = items
            .into_iter()
            .skip((page - 1) * size)
            .take(size)
            .collect();
        let link = |p: usize| format!("{path}?page={p}&size={size}");
        ResponseTemplate::new(200).set_body_json(json!({
            "_pagination": {"size": size, "totalElements": total, "totalPages": pages, "page": page},
            "data": data,
            "_links": {"self": link(page), "first": link(1), "last": link(pages),
                       "next": if page < pages { link(page + 1) } else { String::new() },
                       "previous": if page > 1 { link(page - 1) } else { String::new() }}
        }))
    }

    fn token(&mut self, req: &Request) -> ResponseTemplate {
        let form: HashMap<String, String> = form(&req.body);
        let bad = |what: &str| {
            ResponseTemplate::new(401).set_body_json(json!({
                "error": "invalid_grant", "error_description": what
            }))
        };
        if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
            || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
        {
            return ResponseTemplate::new(401).set_body_json(
                json!({"error": "unauthorized_client", "error_description": "Invalid client secret"}),
            );
        }
        match form.get("grant_type").map(String::as_str) {
            Some("password") => {
                if form.get("username").map(String::as_str) != Some(API_USER)
                    || form.get("password").map(String::as_str) != Some(API_PASSWORD)
                {
                    return bad("Invalid user credentials");
                }
            }
            Some("refresh_token") => {
                let r = form.get("refresh_token").cloned().unwrap_or_default();
                if !self.refresh_tokens.remove(&r) {
                    return ResponseTemplate::new(400).set_body_json(
                        json!({"error": "invalid_grant", "error_description": "Invalid refresh token"}),
                    );
                }
            }
            _ => {
                return ResponseTemplate::new(400)
                    .set_body_json(json!({"error": "unsupported_grant_type"}));
            }
        }
        self.grants.push(form["grant_type"].clone());
        let n = self.grants.len();
        let access = format!("eyJhbGciOiJSUzI1NiJ9.access-{n}");
        let refresh = format!("eyJhbGciOiJIUzI1NiJ9.refresh-{n}");
        self.tokens.insert(
            access.clone(),
            Instant::now() + Duration::from_secs(self.token_lifetime),
        );
        self.refresh_tokens.insert(refresh.clone());
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": access, "expires_in": self.token_lifetime,
            "refresh_expires_in": 1800, "refresh_token": refresh, "token_type": "Bearer",
            "not-before-policy": 0, "session_state": "x", "scope": "profile email"
        }))
    }

    fn handle(&mut self, req: &Request) -> ResponseTemplate {
        let method = req.method.as_str().to_owned();
        let path = req.url.path().to_owned();
        if path == TOKEN_PATH && method == "POST" {
            return self.token(req);
        }
        let query: HashMap<String, String> = req.url.query_pairs().into_owned().collect();
        let bearer = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let live = self
            .tokens
            .get(bearer)
            .is_some_and(|exp| Instant::now() < *exp);
        if !live || self.revoked {
            self.revoked = false;
            self.tokens.clear();
            self.unauthorized += 1;
            return error(401, "Unauthorized");
        }
        let request_id = req
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !valid_request_id(request_id) {
            return error(400, vec!["x-request-id must be a UUID"]);
        }
        if self.throttle > 0 {
            self.throttle -= 1;
            let mut t = error(429, "Too Many Requests");
            if let Some(r) = self.throttle_retry_after {
                t = t.insert_header("Retry-After", r);
            }
            return t;
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
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        let find = |s: &Self, id: &str| {
            id.parse::<i64>()
                .ok()
                .and_then(|n| s.instances.iter().position(|i| i.id == n))
        };
        let not_found =
            |id: &str| error(404, format!("Entry Instances not found by instanceId {id}"));
        match (method.as_str(), segs.as_slice()) {
            ("GET", ["v1", "compute", "images"]) => {
                let list = images()
                    .into_iter()
                    .filter(|i| {
                        query.get("standardImage").is_none_or(|s| {
                            i["standardImage"].as_bool().map(|b| b.to_string()).as_ref() == Some(s)
                        })
                    })
                    .collect();
                self.paged(&path, list, &query)
            }
            ("POST", ["v1", "secrets"]) => {
                let (Some(name), Some(kind), Some(value)) = (
                    body["name"].as_str(),
                    body["type"].as_str(),
                    body["value"].as_str(),
                ) else {
                    return error(
                        400,
                        vec!["name should not be empty", "value should not be empty"],
                    );
                };
                if kind == "password" && !password_ok(value) {
                    return error(400, vec!["value must match the password rule"]);
                }
                let id = self.next_id;
                self.next_id += 1;
                self.secrets.insert(id, (name.to_owned(), value.to_owned()));
                if kind == "ssh" {
                    self.ssh_secrets.insert(id);
                }
                ResponseTemplate::new(201).set_body_json(json!({
                    "data": [{"tenantId": "DE", "customerId": "54321", "secretId": id, "name": name,
                              "type": kind, "value": value, "createdAt": "2026-11-25T10:00:00Z",
                              "updatedAt": "2026-11-25T10:00:00Z"}],
                    "_links": {"self": format!("/v1/secrets/{id}")}
                }))
            }
            ("GET", ["v1", "secrets"]) => {
                let mut list: Vec<(i64, (String, String))> =
                    self.secrets.iter().map(|(k, v)| (*k, v.clone())).collect();
                list.sort_by_key(|(k, _)| *k);
                let list = list
                    .into_iter()
                    .map(|(id, v)| {
                        let kind = if self.ssh_secrets.contains(&id) {
                            "ssh"
                        } else {
                            "password"
                        };
                        (id, v, kind)
                    })
                    .filter(|(_, _, kind)| query.get("type").is_none_or(|t| t == kind))
                    .map(|(id, (name, _), kind)| {
                        json!({"tenantId": "DE", "customerId": "54321", "secretId": id,
                               "name": name, "type": kind, "value": "",
                               "createdAt": "2026-11-25T10:00:00Z",
                               "updatedAt": "2026-11-25T10:00:00Z"})
                    })
                    .collect();
                self.paged(&path, list, &query)
            }
            ("DELETE", ["v1", "secrets", id]) => {
                let Some(n) = id
                    .parse::<i64>()
                    .ok()
                    .filter(|n| self.secrets.contains_key(n))
                else {
                    return error(404, format!("Entry Secret not found by secretId {id}"));
                };
                self.secrets.remove(&n);
                self.deleted_secrets.push(n);
                ResponseTemplate::new(204)
            }
            ("GET", ["v1", "compute", "instances"]) => {
                let list = self
                    .instances
                    .iter()
                    // a loose filter, as a search: the client must match exactly itself
                    .filter(|i| {
                        query
                            .get("displayName")
                            .is_none_or(|d| i.display_name.contains(d.as_str()))
                    })
                    .map(|i| self.view(i))
                    .collect();
                self.paged(&path, list, &query)
            }
            ("POST", ["v1", "compute", "instances"]) => self.create(&body),
            ("GET", ["v1", "compute", "instances", id]) => match find(self, id) {
                Some(p) => ResponseTemplate::new(200).set_body_json(json!({
                    "data": [self.view(&self.instances[p])],
                    "_links": {"self": path}
                })),
                None => not_found(id),
            },
            ("PATCH", ["v1", "compute", "instances", id]) => {
                let Some(p) = find(self, id) else {
                    return not_found(id);
                };
                let Some(name) = body["displayName"].as_str() else {
                    return error(400, "displayName must be a string");
                };
                name.clone_into(&mut self.instances[p].display_name);
                ResponseTemplate::new(200).set_body_json(json!({
                    "data": [{"tenantId": "DE", "customerId": "54321", "instanceId": self.instances[p].id,
                              "createdDate": "2026-11-25T10:00:00.000Z"}],
                    "_links": {"self": path}
                }))
            }
            ("PUT", ["v1", "compute", "instances", id]) => {
                let Some(p) = find(self, id) else {
                    return not_found(id);
                };
                let Some(image) = body["imageId"]
                    .as_str()
                    .filter(|i| images().iter().any(|x| x["imageId"] == *i))
                else {
                    return error(400, "imageId is not a valid image");
                };
                if let Some(secret) = body.get("rootPassword")
                    && !secret
                        .as_i64()
                        .is_some_and(|s| self.secrets.contains_key(&s))
                {
                    return error(500, "Internal Server Error");
                }
                let i = &mut self.instances[p];
                image.clone_into(&mut i.image);
                i.root_password = body["rootPassword"].as_i64();
                i.user_data = body["userData"].as_str().map(str::to_owned);
                i.created = Instant::now();
                i.stopped = false;
                i.reinstalls += 1;
                ResponseTemplate::new(200).set_body_json(json!({
                    "data": [{"tenantId": "DE", "customerId": "54321", "instanceId": i.id,
                              "createdDate": "2026-11-25T10:00:00.000Z"}],
                    "_links": {"self": path}
                }))
            }
            ("POST", ["v1", "compute", "instances", id, "cancel"]) => {
                let Some(p) = find(self, id) else {
                    return not_found(id);
                };
                if self.instances[p].cancel_date.is_some() {
                    return error(422, "Instance is already cancelled");
                }
                self.instances[p].cancel_date = Some("2026-12-24".into());
                ResponseTemplate::new(201).set_body_json(json!({
                    "data": [{"tenantId": "DE", "customerId": "54321", "instanceId": self.instances[p].id,
                              "cancelDate": "2026-12-24"}],
                    "_links": {"self": format!("/v1/compute/instances/{id}")}
                }))
            }
            (
                "POST",
                [
                    "v1",
                    "compute",
                    "instances",
                    id,
                    "actions",
                    action @ ("start" | "stop" | "shutdown" | "restart"),
                ],
            ) => {
                let Some(p) = find(self, id) else {
                    return not_found(id);
                };
                match *action {
                    "stop" | "shutdown" => self.instances[p].stopped = true,
                    "start" => self.instances[p].stopped = false,
                    _ => {}
                }
                ResponseTemplate::new(201).set_body_json(json!({
                    "data": [{"tenantId": "DE", "customerId": "54321", "instanceId": self.instances[p].id,
                              "action": action}],
                    "_links": {"self": path}
                }))
            }
            _ => error(404, format!("Cannot {method} {path}")),
        }
    }

    fn create(&mut self, b: &Value) -> ResponseTemplate {
        let mut problems = Vec::new();
        let product = b["productId"].as_str().unwrap_or("V92");
        if !PRODUCTS.contains(&product) {
            problems.push(format!("productId {product} is not a valid product"));
        }
        let region = b["region"].as_str().unwrap_or("EU");
        if !REGIONS.contains(&region) {
            problems.push("region must be a valid enum value".to_owned());
        }
        let image = b["imageId"].as_str().unwrap_or(UBUNTU_2204);
        if !images().iter().any(|i| i["imageId"] == image) {
            problems.push("imageId is not a valid image".to_owned());
        }
        let period = b["period"].as_i64().unwrap_or(0);
        if ![1, 3, 6, 12].contains(&period) {
            problems.push("period must be one of 1, 3, 6, 12".to_owned());
        }
        if !problems.is_empty() {
            return error(400, problems);
        }
        if let Some(secret) = b.get("rootPassword") {
            // what Contabo does with a bad secret id (terraform-provider-contabo #17, #44)
            if !secret
                .as_i64()
                .is_some_and(|s| self.secrets.contains_key(&s))
            {
                return error(500, "Internal Server Error");
            }
        }
        let ssh_ok = b.get("sshKeys").is_none_or(|k| {
            k.as_array().is_some_and(|a| {
                a.iter()
                    .all(|x| x.as_i64().is_some_and(|x| self.ssh_secrets.contains(&x)))
            })
        });
        if !ssh_ok {
            return error(500, "Internal Server Error");
        }
        let id = self.next_id;
        self.next_id += 1;
        self.creates += 1;
        self.instances.push(FakeInstance {
            id,
            display_name: b["displayName"].as_str().unwrap_or_default().to_owned(),
            region: region.to_owned(),
            product: product.to_owned(),
            image: image.to_owned(),
            period,
            root_password: b["rootPassword"].as_i64(),
            user_data: b["userData"].as_str().map(str::to_owned),
            default_user: b["defaultUser"].as_str().unwrap_or("admin").to_owned(),
            created: Instant::now(),
            stopped: false,
            cancel_date: None,
            forced: None,
            reinstalls: 0,
        });
        let mut t = ResponseTemplate::new(201).set_body_json(json!({
            "data": [{"tenantId": "DE", "customerId": "54321", "instanceId": id,
                      "createdDate": "2026-11-25T10:00:00.000Z", "imageId": image,
                      "productId": product, "region": region, "addOns": [], "osType": "Linux",
                      "status": "provisioning", "sshKeys": b.get("sshKeys").cloned().unwrap_or(json!([]))}],
            "_links": {"self": format!("/v1/compute/instances/{id}")}
        }));
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

/// The auth server and the API server.
struct Servers {
    auth: MockServer,
    api: MockServer,
}

async fn start(fake: &Fake) -> Servers {
    let auth = MockServer::start().await;
    let api = MockServer::start().await;
    for s in [&auth, &api] {
        Mock::given(any()).respond_with(fake.clone()).mount(s).await;
    }
    Servers { auth, api }
}

fn builder(s: &Servers) -> ContaboBuilder {
    ContaboBuilder::new()
        .with_credentials(CLIENT_ID, CLIENT_SECRET, API_USER, API_PASSWORD)
        .with_base_url(s.api.uri())
        .with_auth_url(format!("{}{TOKEN_PATH}", s.auth.uri()))
        .with_allow_http(true)
        .with_timeout(Duration::from_secs(5))
        .with_retries(3, Duration::from_millis(5), Duration::from_millis(30))
}

fn provider(s: &Servers) -> Contabo {
    builder(s).build().unwrap()
}

fn image() -> ImageRef {
    ImageRef::new(UBUNTU_2404, "ubuntu-24.04", OsKind::UbuntuDesktop)
}

fn spec(label: &str) -> InstanceSpec {
    InstanceSpec::new(label, "EU", "V91", image())
}

// ----- the OpenAPI check -----

fn load_spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/specs/contabo/openapi.yaml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the Contabo OpenAPI spec is missing at {} ({e}); these tests expect shared/ \
                 beside the workspace clone",
                path.display()
            )
        });
        serde_norway::from_str(&text).expect("the Contabo OpenAPI spec is valid YAML")
    })
}

fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
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

fn value_ok(schema: &Value, v: &Value) -> bool {
    let typed = match schema["type"].as_str().unwrap_or_default() {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    };
    let in_enum = schema["enum"]
        .as_array()
        .is_none_or(|e| e.iter().any(|x| x == v));
    typed && in_enum
}

fn text_ok(schema: &Value, s: &str) -> bool {
    match schema["type"].as_str().unwrap_or_default() {
        "integer" => s.parse::<i64>().is_ok(),
        "boolean" => s == "true" || s == "false",
        "number" => s.parse::<f64>().is_ok(),
        _ => schema["enum"]
            .as_array()
            .is_none_or(|e| e.iter().any(|x| x == s)),
    }
}

/// Checks every request the API server received: method + path template exist in the spec,
/// path and query parameters are declared and typed, the required `x-request-id` is a fresh
/// UUID every time, a bearer token is sent, and JSON bodies only use declared fields of the
/// right type (and enum), with the required ones present.
async fn check_against_spec(s: &Servers) -> usize {
    let spec = load_spec();
    let paths = spec["paths"].as_object().unwrap();
    let requests = s.api.received_requests().await.unwrap();
    let mut ids = HashSet::new();
    for req in &requests {
        let method = req.method.as_str().to_lowercase();
        let path = req.url.path();
        let (template, item) = paths
            .iter()
            .find(|(t, item)| template_matches(t, path) && item.get(&method).is_some())
            .unwrap_or_else(|| panic!("{method} {path} is not in the Contabo spec"));
        let op = &item[&method];
        let params: Vec<&Value> = item
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .chain(op.get("parameters").and_then(Value::as_array))
            .flatten()
            .map(|p| resolve(spec, p))
            .collect();
        for p in params.iter().filter(|p| p["in"] == "header") {
            let name = p["name"].as_str().unwrap();
            let got = req.headers.get(name).and_then(|v| v.to_str().ok());
            if p["required"] == true {
                assert!(got.is_some(), "{method} {template}: header {name} missing");
            }
            if name == "x-request-id" {
                let id = got.unwrap_or_default();
                assert!(
                    valid_request_id(id),
                    "{method} {template}: x-request-id {id:?}"
                );
                assert!(ids.insert(id.to_owned()), "x-request-id {id} sent twice");
            }
        }
        assert!(
            req.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("Bearer ")),
            "{method} {template}: no bearer token"
        );
        let tpl: Vec<&str> = template.trim_matches('/').split('/').collect();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        for (t, seg) in tpl.iter().zip(&segs) {
            if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                let p = params
                    .iter()
                    .find(|p| p["in"] == "path" && p["name"] == name)
                    .unwrap_or_else(|| panic!("{template}: path parameter {name} undeclared"));
                assert!(
                    text_ok(&p["schema"], seg),
                    "{method} {template}: {name}={seg} does not fit {}",
                    p["schema"]
                );
            }
        }
        for (name, value) in req.url.query_pairs() {
            let p = params
                .iter()
                .find(|p| p["in"] == "query" && p["name"] == *name)
                .unwrap_or_else(|| {
                    panic!("query parameter {name} of {method} {template} is not in the spec")
                });
            assert!(
                text_ok(&p["schema"], &value),
                "{method} {template}: query {name}={value} does not fit {}",
                p["schema"]
            );
        }
        if req.body.is_empty() {
            assert!(
                op.get("requestBody").is_none_or(|b| b["required"] != true),
                "{method} {template}: the spec requires a body"
            );
            continue;
        }
        let body: Value = serde_json::from_slice(&req.body).expect("request bodies are JSON");
        let schema = resolve(
            spec,
            &op["requestBody"]["content"]["application/json"]["schema"],
        );
        let props = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {template} takes no JSON body in the spec"));
        for (field, value) in body.as_object().expect("bodies are objects") {
            let prop = resolve(
                spec,
                props.get(field).unwrap_or_else(|| {
                    panic!("{method} {template}: field {field} is not in the spec")
                }),
            );
            assert!(
                value_ok(prop, value),
                "{method} {template}: field {field} is {value}, the spec says {} {}",
                prop["type"],
                prop["enum"]
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
        .filter(|r| r.method.as_str() == method && r.url.path() == path)
        .count()
}

async fn api_requests(s: &Servers) -> Vec<Request> {
    s.api.received_requests().await.unwrap()
}

// ----- tests -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_kit_passes_on_the_fake() {
    let fake = Fake::default();
    let servers = start(&fake).await;
    let contabo = provider(&servers);
    let cfg = CloudKitConfig::new("EU", "V91", OsKind::UbuntuDesktop, Duration::from_secs(5))
        .with_missing_id("999999999");
    run_all(&contabo, &cfg).await;
    assert_eq!(contabo.capabilities().removal, Removal::Cancel);
    let (creates, live) = fake.with(|s| {
        (
            s.creates,
            s.instances
                .iter()
                .filter(|i| i.cancel_date.is_none())
                .count(),
        )
    });
    assert!(creates >= 7, "{creates}");
    assert_eq!(live, 0, "the kit cancelled everything it ordered");
    assert!(check_against_spec(&servers).await > 40);
}

#[tokio::test]
async fn create_passes_the_password_as_a_secret_and_parses_the_201() {
    let fake = Fake::default();
    let servers = start(&fake).await;
    let contabo = provider(&servers);
    let label = "nemordp-0192f7a4-0000-7000-8000-000000000001";
    let password = "Xy7_Secret@Pass42word";
    let s = spec(label)
        .with_user_data("#cloud-config\n{\"hostname\": \"rdp-1\"}\n")
        .with_admin_password(SecretString::from(password))
        .with_billing_months(3);
    let created = contabo.create_instance(&s).await.unwrap();
    assert_eq!(created.label, label);
    assert_eq!(created.status, InstanceStatus::Pending);
    assert_eq!(created.region, "EU");
    assert!(created.admin_password.is_none());
    assert!(created.created_at.is_some());
    let id: i64 = created.id.as_str().parse().unwrap();

    let (inst, secrets) = fake.with(|st| (st.instances[0].clone(), st.secrets.clone()));
    assert_eq!(inst.id, id);
    assert_eq!(inst.display_name, label);
    assert_eq!(inst.period, 3, "period from the plan");
    assert_eq!(inst.default_user, "root");
    assert_eq!(inst.image, UBUNTU_2404);
    assert!(
        inst.user_data
            .as_deref()
            .unwrap()
            .starts_with("#cloud-config")
    );
    let secret = inst.root_password.expect("rootPassword is a secret id");
    assert_eq!(secrets[&secret], (label.to_owned(), password.to_owned()));

    // the password text never travels in the instance request
    let requests = api_requests(&servers).await;
    let create = requests
        .iter()
        .find(|r| r.method.as_str() == "POST" && r.url.path() == "/v1/compute/instances")
        .unwrap();
    assert!(!String::from_utf8_lossy(&create.body).contains(password));
    let trace = create.headers.get("x-trace-id").unwrap().to_str().unwrap();
    assert_eq!(trace, label, "x-trace-id carries the order label");

    // status progression; the secret goes once the machine runs
    let got = contabo.get_instance(&created.id).await.unwrap();
    assert_eq!(got.status, InstanceStatus::Pending);
    assert_eq!(got.address, None);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let got = contabo.get_instance(&created.id).await.unwrap();
    assert_eq!(got.status, InstanceStatus::Installing);
    assert!(!got.is_ready_for_probe());
    assert!(fake.with(|st| st.deleted_secrets.is_empty()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = contabo.get_instance(&created.id).await.unwrap();
    assert_eq!(got.status, InstanceStatus::Running);
    assert!(got.is_ready_for_probe());
    assert_eq!(
        got.address.unwrap().to_string(),
        format!("203.0.113.{}", id % 200 + 1)
    );
    assert_eq!(fake.with(|st| st.deleted_secrets.clone()), vec![secret]);
    // calls by id carry the label too
    let requests = api_requests(&servers).await;
    let last = requests.last().unwrap();
    assert_eq!(
        last.headers.get("x-trace-id").unwrap().to_str().unwrap(),
        label
    );
    assert_eq!(
        contabo.find_one_by_label(label).await.unwrap().unwrap().id,
        created.id
    );
    let requests = api_requests(&servers).await;
    let lookup = requests.last().unwrap();
    assert_eq!(lookup.url.path(), "/v1/compute/instances");
    assert_eq!(
        lookup.headers.get("x-trace-id").unwrap().to_str().unwrap(),
        label
    );
    check_against_spec(&servers).await;
}

#[tokio::test]
async fn bad_input_is_named_before_anything_is_bought() {
    let fake = Fake::default();
    let servers = start(&fake).await;
    let contabo = provider(&servers);
    let mut bad = spec("nemordp-bad");
    bad.size = "V9999".into();
    let e = contabo.create_instance(&bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        e.to_string().contains("V9999") && e.to_string().contains("V91"),
        "{e}"
    );
    let mut bad = spec("nemordp-bad");
    bad.region = "MARS".into();
    let e = contabo.create_instance(&bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("MARS"), "{e}");
    let e = contabo
        .create_instance(&spec("nemordp-bad").with_billing_months(2))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let weak = spec("nemordp-bad").with_admin_password(SecretString::from("Abcdefgh-2345.xyzWQ"));
    let e = contabo.create_instance(&weak).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(!e.to_string().contains("Abcdefgh"), "{e}");
    let mut windows = spec("nemordp-bad");
    windows.image = ImageRef::new(
        "2a3b4c5d-6e7f-4a1b-8c2d-3e4f5a6b7c03",
        "w",
        OsKind::WindowsServer,
    );
    assert_eq!(
        contabo.create_instance(&windows).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );

    // products restricted to regions by configuration
    let narrow = builder(&servers)
        .with_products([ContaboProduct::new("V92", 4, 8192, 150).in_regions(["EU", "UK"])])
        .build()
        .unwrap();
    let size = narrow.resolve_size("UK", "V92").await.unwrap();
    assert_eq!((size.vcpus, size.ram_mib, size.disk_gib), (4, 8192, 150));
    let e = narrow.resolve_size("US-east", "V92").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected);
    assert!(e.to_string().contains("not sold in region"), "{e}");

    assert!(
        api_requests(&servers).await.is_empty(),
        "nothing reached the API"
    );
    assert_eq!(fake.with(|s| s.grants.len()), 0, "not even a token");
}

#[tokio::test]
async fn images_are_resolved_by_name_across_pages() {
    let fake = Fake::default();
    let servers = start(&fake).await;
    let contabo = provider(&servers);
    let ubuntu = contabo
        .resolve_image(OsKind::UbuntuDesktop, None)
        .await
        .unwrap();
    assert_eq!(
        (ubuntu.id.as_str(), ubuntu.name.as_str()),
        (UBUNTU_2404, "ubuntu-24.04")
    );
    let by_name = contabo
        .resolve_image(OsKind::UbuntuDesktop, Some("ubuntu-22.04"))
        .await
        .unwrap();
    assert_eq!(by_name.id, UBUNTU_2204);
    let by_id = contabo
        .resolve_image(OsKind::UbuntuDesktop, Some(UBUNTU_2204))
        .await
        .unwrap();
    assert_eq!(by_id.name, "ubuntu-22.04");
    for hint in ["ubuntu-20.04", "debian-12", "nope"] {
        let e = contabo
            .resolve_image(OsKind::UbuntuDesktop, Some(hint))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{hint}");
    }
    assert_eq!(
        contabo
            .resolve_image(OsKind::WindowsServer, None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    // 7 images, 2 per page: 4 pages, walked once and cached
    let requests = api_requests(&servers).await;
    assert_eq!(count(&requests, "GET", "/v1/compute/images"), 4);
    check_against_spec(&servers).await;
}

#[tokio::test]
async fn tokens_are_cached_refreshed_before_expiry_and_renewed_after_a_401() {
    let fake = Fake::default();
    fake.with(|s| s.token_lifetime = 1);
    let servers = start(&fake).await;
    let contabo = builder(&servers)
        .with_token_refresh_margin(Duration::from_secs(30))
        .build()
        .unwrap();
    let created = contabo.create_instance(&spec("nemordp-tok")).await.unwrap();
    contabo.get_instance(&created.id).await.unwrap();
    contabo.get_instance(&created.id).await.unwrap();
    assert_eq!(
        fake.with(|s| s.grants.clone()),
        vec!["password"],
        "one token, cached"
    );

    // a 1 s token is renewed half-way (the margin is capped at half the lifetime) with the
    // refresh grant, before the API could refuse it
    tokio::time::sleep(Duration::from_millis(600)).await;
    contabo.get_instance(&created.id).await.unwrap();
    assert_eq!(
        fake.with(|s| s.grants.clone()),
        vec!["password", "refresh_token"]
    );
    assert_eq!(fake.with(|s| s.unauthorized), 0);

    // revoked server-side: one 401, a fresh token, the call retried once and succeeding
    fake.with(|s| {
        s.token_lifetime = 300;
        s.revoked = true;
    });
    contabo.get_instance(&created.id).await.unwrap();
    assert_eq!(fake.with(|s| s.unauthorized), 1);
    assert_eq!(fake.with(|s| s.grants.len()), 3);

    // a create refused with 401 is sent again once (a 401 was not processed)
    fake.with(|s| s.revoked = true);
    contabo
        .create_instance(&spec("nemordp-tok2"))
        .await
        .unwrap();
    assert_eq!(fake.with(|s| s.creates), 2);

    // wrong credentials: Unauthenticated, naming the variables, never echoing secrets
    let wrong = ContaboBuilder::new()
        .with_credentials(CLIENT_ID, CLIENT_SECRET, API_USER, "wrong-Passw0rd!")
        .with_base_url(servers.api.uri())
        .with_auth_url(format!("{}{TOKEN_PATH}", servers.auth.uri()))
        .with_allow_http(true)
        .build()
        .unwrap();
    let e = wrong.get_instance(&created.id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{e}");
    assert!(e.to_string().contains("Invalid user credentials"), "{e}");
    assert!(e.to_string().contains("CONTABO_API_PASSWORD"), "{e}");
    for secret in ["wrong-Passw0rd!", CLIENT_SECRET] {
        assert!(!format!("{e} {e:?}").contains(secret));
    }
    // the token endpoint got form-encoded password grants with every credential
    let auth = servers.auth.received_requests().await.unwrap();
    let first: HashMap<String, String> = form(&auth[0].body);
    assert_eq!(first["grant_type"], "password");
    assert_eq!(first["username"], API_USER);
    assert_eq!(first["client_id"], CLIENT_ID);
    check_against_spec(&servers).await;
}

#[tokio::test]
async fn the_fake_rejects_a_request_without_x_request_id() {
    let fake = Fake::default();
    let servers = start(&fake).await;
    let contabo = provider(&servers);
    contabo
        .resolve_image(OsKind::UbuntuDesktop, None)
        .await
        .unwrap();
    let token = fake.with(|s| s.tokens.keys().next().unwrap().clone());
    let http = reqwest::Client::new();
    let url = format!("{}/v1/compute/instances", servers.api.uri());
    let resp = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let with = http
        .get(&url)
        .bearer_auth(&token)
        .header("x-request-id", "04e0f898-37b4-48bc-a794-1a57abe6aa31")
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);
    let without_token = http
        .get(&url)
        .header("x-request-id", "04e0f898-37b4-48bc-a794-1a57abe6aa32")
        .send()
        .await
        .unwrap();
    assert_eq!(without_token.status(), 401);
}

#[tokio::test]
async fn throttling_is_retried_with_backoff_on_safe_calls_only() {
    let fake = Fake::default();
    let servers = start(&fake).await;
    let contabo = provider(&servers);
    let created = contabo.create_instance(&spec("nemordp-429")).await.unwrap();
    // Contabo documents 429 without Retry-After: exponential backoff
    fake.with(|s| s.throttle = 2);
    contabo.get_instance(&created.id).await.unwrap();
    let path = format!("/v1/compute/instances/{}", created.id);
    assert_eq!(count(&api_requests(&servers).await, "GET", &path), 3);

    let once = builder(&servers)
        .with_retries(0, Duration::from_millis(5), Duration::from_millis(5))
        .build()
        .unwrap();
    fake.with(|s| {
        s.throttle = 1;
        s.throttle_retry_after = Some("7");
    });
    let e = once.get_instance(&created.id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    assert!(e.to_string().contains("x-request-id"), "{e}");

    // a throttled create is not sent again by the client: the provisioner reschedules it
    fake.with(|s| {
        s.throttle = 1;
        s.throttle_retry_after = None;
    });
    let before = fake.with(|s| s.secrets.len());
    let e = contabo
        .create_instance(&spec("nemordp-429b"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(fake.with(|s| s.creates), 1);
    assert_eq!(fake.with(|s| s.secrets.len()), before);
    check_against_spec(&servers).await;
}

#[tokio::test]
async fn error_bodies_in_both_shapes_map_to_kinds() {
    let fake = Fake::default();
    let servers = start(&fake).await;
    let contabo = provider(&servers);
    let created = contabo.create_instance(&spec("nemordp-err")).await.unwrap();
    let path = format!("/v1/compute/instances/{}", created.id);
    let cases = [
        (
            400,
            json!(["displayName must be shorter than 255", "period must be 1"]),
            ErrorKind::Rejected,
            "displayName must be shorter than 255; period must be 1",
        ),
        (
            402,
            json!("Request refused as it requires additional payed service"),
            ErrorKind::Rejected,
            "additional payed",
        ),
        (
            403,
            json!("Forbidden resource"),
            ErrorKind::PermissionDenied,
            "Forbidden resource",
        ),
        (409, json!("Conflict"), ErrorKind::Conflict, "Conflict"),
        (
            404,
            json!(["Entry Instances not found"]),
            ErrorKind::NotFound,
            "Entry Instances not found",
        ),
    ];
    for (status, message, kind, text) in cases {
        fake.with(|s| {
            s.script.push_back(Scripted {
                method: "GET",
                path: path.clone(),
                status,
                body: json!({"statusCode": status, "message": message}),
                retry_after: None,
            });
        });
        let e = contabo.get_instance(&created.id).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{status}: {e}");
        assert!(e.to_string().contains(text), "{status}: {e}");
        assert_eq!(e.backend(), "contabo");
    }
    // a body that is neither shape still maps by status
    let once = builder(&servers)
        .with_retries(0, Duration::from_millis(1), Duration::from_millis(1))
        .build()
        .unwrap();
    fake.with(|s| {
        s.script.push_back(Scripted {
            method: "GET",
            path: path.clone(),
            status: 502,
            body: json!("<html>bad gateway</html>"),
            retry_after: None,
        });
    });
    assert_eq!(
        once.get_instance(&created.id).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    // 500 on create: unknown outcome, and the secret stays for the machine that may exist
    fake.with(|s| {
        s.script.push_back(Scripted {
            method: "POST",
            path: "/v1/compute/instances".into(),
            status: 500,
            body: json!({"statusCode": 500, "message": "Internal Server Error"}),
            retry_after: None,
        });
    });
    let s = spec("nemordp-err2").with_admin_password(SecretString::from("Xy7_Secret@Pass42word"));
    let e = contabo.create_instance(&s).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Ambiguous);
    assert!(fake.with(|s| s.deleted_secrets.is_empty()));
    // a refused create deletes its unused secret
    let mut refused = s.clone();
    refused.image = ImageRef::new(
        "99999999-9999-4999-8999-999999999999",
        "gone",
        OsKind::UbuntuDesktop,
    );
    let e = contabo.create_instance(&refused).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected);
    assert!(e.to_string().contains("imageId"), "{e}");
    assert_eq!(fake.with(|s| s.deleted_secrets.len()), 1);
    // a timeout after the fake created the machine: ambiguous, and the label finds it
    fake.with(|s| s.create_delay = Some(Duration::from_millis(600)));
    let slow = builder(&servers)
        .with_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let e = slow
        .create_instance(&spec("nemordp-err3"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Ambiguous, "{e}");
    fake.with(|s| s.create_delay = None);
    assert_eq!(
        contabo.find_by_label("nemordp-err3").await.unwrap().len(),
        1
    );
    check_against_spec(&servers).await;
}

#[tokio::test]
async fn operator_attention_statuses_surface_as_holds_and_failures() {
    let fake = Fake::default();
    fake.with(|s| {
        s.installing_after = Duration::ZERO;
        s.running_after = Duration::ZERO;
    });
    let servers = start(&fake).await;
    let contabo = provider(&servers);
    let created = contabo
        .create_instance(&spec("nemordp-hold"))
        .await
        .unwrap();
    for status in [
        "verification_required",
        "pending_payment",
        "manual_provisioning",
        "product_not_available",
    ] {
        fake.with(|s| s.instances[0].forced = Some((status, "")));
        let got = contabo.get_instance(&created.id).await.unwrap();
        assert!(
            matches!(got.status, InstanceStatus::AccountHold(_)),
            "{status}: {got:?}"
        );
    }
    fake.with(|s| s.instances[0].forced = Some(("error", "Installation failed: no space")));
    assert_eq!(
        contabo.get_instance(&created.id).await.unwrap().status,
        InstanceStatus::Failed("Installation failed: no space".into())
    );
    fake.with(|s| s.instances[0].forced = Some(("rescue", "")));
    assert_eq!(
        contabo.get_instance(&created.id).await.unwrap().status,
        InstanceStatus::Stopped
    );
    check_against_spec(&servers).await;
}

#[tokio::test]
async fn actions_cancel_and_listing() {
    let fake = Fake::default();
    fake.with(|s| {
        s.installing_after = Duration::ZERO;
        s.running_after = Duration::ZERO;
    });
    let servers = start(&fake).await;
    let contabo = provider(&servers);
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            contabo
                .create_instance(&spec(&format!("nemordp-list-{n}")))
                .await
                .unwrap()
                .id,
        );
    }
    let first = contabo.list_instances(PageRequest::first(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.next.as_deref(), Some("2"));
    assert_eq!(contabo.list_all_instances().await.unwrap().len(), 5);
    // the fake's filter is a search ("nemordp-list-1" is in no other name, "nemordp-list" in all)
    assert_eq!(
        contabo.find_by_label("nemordp-list-3").await.unwrap().len(),
        1
    );
    assert!(
        contabo
            .find_by_label("nemordp-list")
            .await
            .unwrap()
            .is_empty()
    );

    let id = &ids[0];
    contabo.stop(id).await.unwrap();
    assert_eq!(
        contabo.get_instance(id).await.unwrap().status,
        InstanceStatus::Stopped
    );
    contabo.stop(id).await.unwrap();
    contabo.start(id).await.unwrap();
    contabo.reboot(id).await.unwrap();
    contabo.shutdown(id).await.unwrap();
    contabo.power_off(id).await.unwrap();
    let requests = api_requests(&servers).await;
    let actions = |a: &str| {
        count(
            &requests,
            "POST",
            &format!("/v1/compute/instances/{id}/actions/{a}"),
        )
    };
    assert_eq!(
        (
            actions("shutdown"),
            actions("start"),
            actions("restart"),
            actions("stop")
        ),
        (2, 1, 1, 1),
        "the second stop saw the machine stopped"
    );

    // cancel: the machine runs to its cancel date, reads Terminated, leaves listings
    contabo.delete_instance(id).await.unwrap();
    contabo.delete_instance(id).await.unwrap();
    assert_eq!(
        contabo.get_instance(id).await.unwrap().status,
        InstanceStatus::Terminated
    );
    assert_eq!(contabo.list_all_instances().await.unwrap().len(), 4);
    assert!(
        contabo
            .find_by_label("nemordp-list-0")
            .await
            .unwrap()
            .is_empty()
    );
    let requests = api_requests(&servers).await;
    assert_eq!(
        count(
            &requests,
            "POST",
            &format!("/v1/compute/instances/{id}/cancel")
        ),
        1
    );
    // a cancel refused because another one landed first is success
    let other = &ids[1];
    fake.with(|s| s.instances[1].cancel_date = Some("2026-12-24".into()));
    contabo.delete_instance(other).await.unwrap();
    contabo
        .delete_instance(&InstanceId::new("424242"))
        .await
        .unwrap();
    contabo
        .delete_instance(&InstanceId::new("not-a-number"))
        .await
        .unwrap();
    assert_eq!(
        contabo
            .start(&InstanceId::new("424242"))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
    check_against_spec(&servers).await;
}

#[tokio::test]
async fn a_pooled_machine_is_reinstalled_instead_of_ordering_one() {
    let fake = Fake::default();
    fake.with(|s| {
        s.installing_after = Duration::ZERO;
        s.running_after = Duration::ZERO;
    });
    let servers = start(&fake).await;
    let contabo = builder(&servers)
        .with_reuse_pool("rdp-pool")
        .build()
        .unwrap();
    let plain = provider(&servers);
    let old = plain
        .create_instance(&spec("nemordp-old-order"))
        .await
        .unwrap();
    contabo.release_to_pool(&old.id).await.unwrap();
    assert_eq!(
        fake.with(|s| s.instances[0].display_name.clone()),
        "rdp-pool"
    );

    let s = spec("nemordp-new-order")
        .with_user_data("#cloud-config\n{}\n")
        .with_admin_password(SecretString::from("Xy7_Secret@Pass42word"));
    let got = contabo.create_instance(&s).await.unwrap();
    assert_eq!(got.id, old.id, "the paid machine was reused");
    assert_eq!(got.label, "nemordp-new-order");
    let inst = fake.with(|st| st.instances[0].clone());
    assert_eq!(inst.reinstalls, 1);
    assert_eq!(inst.display_name, "nemordp-new-order");
    assert!(inst.root_password.is_some());
    assert_eq!(inst.user_data.as_deref(), Some("#cloud-config\n{}\n"));
    assert_eq!(fake.with(|st| st.creates), 1, "nothing new ordered");

    // pool empty (or only wrong-sized machines): a new order
    let other = contabo
        .create_instance(&spec("nemordp-newer"))
        .await
        .unwrap();
    assert_ne!(other.id, old.id);
    assert_eq!(fake.with(|st| st.creates), 2);
    assert_eq!(
        plain.release_to_pool(&other.id).await.unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
    check_against_spec(&servers).await;
}

#[tokio::test]
async fn leftover_password_secrets_are_purged_once_their_machine_is_installed() {
    let fake = Fake::default();
    fake.with(|s| {
        s.installing_after = Duration::ZERO;
        s.running_after = Duration::from_secs(3600);
    });
    let servers = start(&fake).await;
    let pw = || SecretString::from("Xy7_Secret@Pass42word");
    for n in 0..3 {
        // a provider per create: none of them lives to see its machine running
        provider(&servers)
            .create_instance(&spec(&format!("nemordp-purge-{n}")).with_admin_password(pw()))
            .await
            .unwrap();
    }
    // someone else's secret is never touched
    fake.with(|s| {
        s.secrets
            .insert(1, ("my-own-password".into(), "Other_Secret@42".into()));
    });
    let janitor = provider(&servers);
    assert_eq!(
        janitor.purge_secrets().await.unwrap(),
        0,
        "all still installing"
    );
    fake.with(|s| {
        s.instances[0].forced = Some(("running", ""));
        s.instances[1].cancel_date = Some("2026-12-24".into());
    });
    assert_eq!(janitor.purge_secrets().await.unwrap(), 2);
    let left: Vec<String> = fake.with(|s| {
        let mut v: Vec<String> = s.secrets.values().map(|(n, _)| n.clone()).collect();
        v.sort();
        v
    });
    assert_eq!(left, vec!["my-own-password", "nemordp-purge-2"]);
    check_against_spec(&servers).await;
}

#[tokio::test]
async fn operator_ssh_keys_travel_as_secrets_made_once() {
    let fake = Fake::default();
    let servers = start(&fake).await;
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx7 ops@example";
    let with_keys = || builder(&servers).with_ssh_keys([key]).build().unwrap();
    let contabo = with_keys();
    contabo
        .create_instance(&spec("nemordp-ssh-1"))
        .await
        .unwrap();
    contabo
        .create_instance(&spec("nemordp-ssh-2"))
        .await
        .unwrap();
    // after a restart the secret is found by name, not made again
    with_keys()
        .create_instance(&spec("nemordp-ssh-3"))
        .await
        .unwrap();
    let (ssh, secrets) = fake.with(|s| (s.ssh_secrets.clone(), s.secrets.clone()));
    assert_eq!(ssh.len(), 1, "one secret for one key");
    let id = *ssh.iter().next().unwrap();
    assert_eq!(secrets[&id].1, key);
    let requests = api_requests(&servers).await;
    let creates: Vec<&Request> = requests
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == "/v1/compute/instances")
        .collect();
    assert_eq!(creates.len(), 3);
    for c in creates {
        let body: Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(body["sshKeys"], json!([id]));
        assert!(!String::from_utf8_lossy(&c.body).contains("AAAAC3Nz"));
    }
    assert_eq!(count(&requests, "POST", "/v1/secrets"), 1);
    // password secrets purges never touch the key
    assert_eq!(with_keys().purge_secrets().await.unwrap(), 0);
    assert!(fake.with(|s| s.secrets.contains_key(&id)));
    check_against_spec(&servers).await;
}

// ----- the spec check itself catches bad requests -----

async fn send_raw(
    s: &Servers,
    fake: &Fake,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) {
    let c = provider(s);
    c.resolve_image(OsKind::UbuntuDesktop, None).await.unwrap();
    let token = fake.with(|st| st.tokens.keys().next().unwrap().clone());
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", s.api.uri()))
        .bearer_auth(token)
        .header("x-request-id", uuid_v4_like());
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap();
}

fn uuid_v4_like() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("04e0f898-37b4-48bc-a794-{n:012x}")
}

#[tokio::test]
#[should_panic(
    expected = "field rootPassword is \"Xy7_Secret@Pass42word\", the spec says \"integer\""
)]
async fn spec_check_catches_a_password_in_the_create() {
    let fake = Fake::default();
    let s = start(&fake).await;
    let body = json!({"period": 1, "rootPassword": "Xy7_Secret@Pass42word"});
    send_raw(
        &s,
        &fake,
        reqwest::Method::POST,
        "/v1/compute/instances",
        Some(body),
    )
    .await;
    check_against_spec(&s).await;
}

#[tokio::test]
#[should_panic(expected = "field region is \"eu-west\", the spec says \"string\" [")]
async fn spec_check_catches_a_region_outside_the_enum() {
    let fake = Fake::default();
    let s = start(&fake).await;
    let body = json!({"period": 1, "region": "eu-west"});
    send_raw(
        &s,
        &fake,
        reqwest::Method::POST,
        "/v1/compute/instances",
        Some(body),
    )
    .await;
    check_against_spec(&s).await;
}

#[tokio::test]
#[should_panic(expected = "post /v1/compute/instances/1/reboot is not in the Contabo spec")]
async fn spec_check_catches_an_unknown_path() {
    let fake = Fake::default();
    let s = start(&fake).await;
    send_raw(
        &s,
        &fake,
        reqwest::Method::POST,
        "/v1/compute/instances/1/reboot",
        None,
    )
    .await;
    check_against_spec(&s).await;
}

#[tokio::test]
#[should_panic(expected = "instanceId=abc does not fit")]
async fn spec_check_catches_a_non_integer_id() {
    let fake = Fake::default();
    let s = start(&fake).await;
    send_raw(
        &s,
        &fake,
        reqwest::Method::GET,
        "/v1/compute/instances/abc",
        None,
    )
    .await;
    check_against_spec(&s).await;
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

fn contabo_provisioner(
    contabo: Arc<Contabo>,
    orphan_grace: Duration,
) -> (
    nemordp_core::provisioner::Provisioner,
    nemordp_core::sim::payments::SimPayments,
) {
    use nemordp_core::{
        Asset, Currency, Money,
        plan::{BillingPeriod, Plan, PlanCatalog},
        provisioner::{Provisioner, ProvisionerConfig},
        seal::Sealer,
        sim::{notify::RecordingNotifier, payments::SimPayments, store::MemoryStore},
    };
    let payments = SimPayments::new(Asset::Fiat(Currency::Eur), SecretString::from("whsec_t"));
    let mut config = ProvisionerConfig::default();
    config.provider_poll_initial = Duration::from_millis(50);
    config.provider_poll_max = Duration::from_millis(100);
    config.probe_interval = Duration::from_millis(50);
    config.idle_poll = Duration::from_millis(10);
    config.retry_initial = Duration::from_millis(20);
    config.retry_max = Duration::from_millis(100);
    config.lookup_interval = Duration::from_millis(50);
    config.orphan_grace = orphan_grace;
    let catalog = PlanCatalog::from_plans([Plan::new(
        "ubuntu",
        "contabo",
        OsKind::UbuntuDesktop,
        "EU",
        "V91",
        Money::parse_major(Currency::Eur, "12").unwrap(),
    )
    .with_period(BillingPeriod::Quarterly)
    .with_packages(["firefox"])])
    .unwrap();
    let provisioner = Provisioner::builder()
        .store(Arc::new(MemoryStore::new()))
        .provider(contabo)
        .probe(Arc::new(AlwaysRdp))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(RecordingNotifier::new()))
        .catalog(catalog)
        .sealer(Sealer::ephemeral())
        .config(config)
        .build()
        .unwrap();
    (provisioner, payments)
}

/// Places, pays and settles one order.
async fn settle_one_order(
    provisioner: &nemordp_core::provisioner::Provisioner,
    payments: &nemordp_core::sim::payments::SimPayments,
) -> nemordp_core::order::Order {
    let order = provisioner
        .place_order(&"ubuntu".into(), nemordp_core::order::Customer::new("c1"))
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
    assert_eq!(
        done.state,
        nemordp_core::order::OrderState::Active,
        "{done:?}"
    );
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provisioner_delivers_a_contabo_machine_with_our_password() {
    let fake = Fake::default();
    fake.with(|s| {
        s.installing_after = Duration::from_millis(100);
        s.running_after = Duration::from_millis(300);
    });
    let servers = start(&fake).await;
    let (provisioner, payments) =
        contabo_provisioner(Arc::new(provider(&servers)), Duration::from_secs(900));
    let order = settle_one_order(&provisioner, &payments).await;
    let details = provisioner.connection_details(order.id).await.unwrap();
    let (inst, deleted) = fake.with(|s| {
        assert_eq!(s.instances.len(), 1, "exactly one machine bought");
        (s.instances[0].clone(), s.deleted_secrets.clone())
    });
    assert_eq!(inst.display_name, order.instance_label());
    assert_eq!(inst.period, 3, "the plan's quarterly term");
    let script = inst.user_data.expect("the cloud-config");
    assert!(script.starts_with("#cloud-config"));
    assert!(script.contains("xrdp") && script.contains("firefox"));
    assert!(
        !script.contains(details.password.expose_secret()),
        "only a hash travels"
    );
    assert_eq!(details.username, "rdpuser");
    assert!(details.host.starts_with("203.0.113."), "{}", details.host);
    assert!(details.rdp_file.contains(&details.host));
    // the root password secret carried the delivered password, and was deleted once running
    let secret = inst.root_password.expect("a root password secret");
    assert_eq!(deleted, vec![secret]);
    let requests = api_requests(&servers).await;
    let secret_post = requests
        .iter()
        .find(|r| r.method.as_str() == "POST" && r.url.path() == "/v1/secrets")
        .unwrap();
    let body: Value = serde_json::from_slice(&secret_post.body).unwrap();
    assert_eq!(body["value"], details.password.expose_secret());
    assert_eq!(body["name"], order.instance_label());
    check_against_spec(&servers).await;
}

/// A fake with instant installs, a Contabo client with the reuse pool `rdp-pool`, a
/// provisioner on it, and one paid machine whose label names an order this shop never had.
struct PooledOrphan {
    fake: Fake,
    servers: Servers,
    contabo: Arc<Contabo>,
    provisioner: nemordp_core::provisioner::Provisioner,
    payments: nemordp_core::sim::payments::SimPayments,
    orphan: nemordp_core::cloud::Instance,
}

async fn pooled_orphan() -> PooledOrphan {
    let fake = Fake::default();
    fake.with(|s| {
        s.installing_after = Duration::ZERO;
        s.running_after = Duration::ZERO;
    });
    let servers = start(&fake).await;
    let contabo = Arc::new(
        builder(&servers)
            .with_reuse_pool("rdp-pool")
            .build()
            .unwrap(),
    );
    let (provisioner, payments) = contabo_provisioner(Arc::clone(&contabo), Duration::ZERO);
    let stray = nemordp_core::OrderId::new().instance_label();
    let orphan = contabo.create_instance(&spec(&stray)).await.unwrap();
    PooledOrphan {
        fake,
        servers,
        contabo,
        provisioner,
        payments,
        orphan,
    }
}

/// Settles one order and checks it reinstalled the pooled orphan instead of ordering anew.
async fn next_order_reinstalls_the_orphan(
    t: &PooledOrphan,
) -> (nemordp_core::order::Order, FakeInstance) {
    let order = settle_one_order(&t.provisioner, &t.payments).await;
    let inst = t.fake.with(|s| {
        assert_eq!(s.creates, 1, "no second contract ordered");
        s.instances[0].clone()
    });
    assert_eq!(inst.id.to_string(), t.orphan.id.as_str());
    assert_eq!(inst.reinstalls, 1);
    assert_eq!(inst.display_name, order.instance_label());
    (order, inst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_is_reported_pooled_and_reinstalled_for_the_next_order() {
    use nemordp_core::provisioner::OrphanPolicy;
    let t = pooled_orphan().await;
    let found = t
        .provisioner
        .reconcile_orphans(OrphanPolicy::Report)
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].instance_id, t.orphan.id);
    assert!(!found[0].removed);
    t.contabo
        .release_to_pool(&found[0].instance_id)
        .await
        .unwrap();

    let (_, inst) = next_order_reinstalls_the_orphan(&t).await;
    assert!(inst.user_data.unwrap().starts_with("#cloud-config"));
    assert!(inst.root_password.is_some());
    assert!(
        t.provisioner
            .reconcile_orphans(OrphanPolicy::Report)
            .await
            .unwrap()
            .is_empty(),
        "the reused machine is owned now"
    );
    check_against_spec(&t.servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delete_policy_recycles_an_orphan_into_the_pool_instead_of_cancelling() {
    use nemordp_core::provisioner::OrphanPolicy;
    let t = pooled_orphan().await;
    let found = t
        .provisioner
        .reconcile_orphans(OrphanPolicy::Delete)
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].recycled && !found[0].removed, "{found:?}");
    t.fake
        .with(|s| assert!(s.instances[0].cancel_date.is_none(), "not cancelled"));
    next_order_reinstalls_the_orphan(&t).await;

    // Without a pool the same policy cancels.
    let plain = Arc::new(builder(&t.servers).build().unwrap());
    let (provisioner, _) = contabo_provisioner(Arc::clone(&plain), Duration::ZERO);
    let stray = nemordp_core::OrderId::new().instance_label();
    let second = plain.create_instance(&spec(&stray)).await.unwrap();
    let found = provisioner
        .reconcile_orphans(OrphanPolicy::Delete)
        .await
        .unwrap();
    let gone = found.iter().find(|o| o.instance_id == second.id).unwrap();
    assert!(gone.removed && !gone.recycled, "{gone:?}");
    check_against_spec(&t.servers).await;
}

// ----- the same kit against the real Contabo, only on request (it buys machines) -----

#[allow(clippy::unused_async)]
async fn live_setup() -> Option<(Contabo, CloudKitConfig)> {
    if std::env::var("NEMORDP_CONTABO_LIVE_CONFORMANCE").as_deref() != Ok("1") {
        eprintln!(
            "live Contabo conformance skipped: set NEMORDP_CONTABO_LIVE_CONFORMANCE=1 and the \
             CONTABO_* credentials to run it (it orders machines on monthly contracts, which \
             a cancel does not refund)"
        );
        return None;
    }
    let contabo = ContaboBuilder::from_env()
        .build()
        .expect("CONTABO_* credentials must be set for the live conformance run");
    let region = std::env::var("NEMORDP_CONTABO_REGION").unwrap_or_else(|_| "EU".into());
    let size = std::env::var("NEMORDP_CONTABO_PRODUCT").unwrap_or_else(|_| "V91".into());
    let cfg = CloudKitConfig::new(
        region,
        size,
        OsKind::UbuntuDesktop,
        Duration::from_secs(120),
    )
    .with_missing_id("999999999");
    Some((contabo, cfg))
}

mod live {
    nemordp_core::conformance_cloud!(super::live_setup);
}
