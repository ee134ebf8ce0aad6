//! Every route the server answers, in one table: method, path pattern (`{name}` matches
//! one segment), handler. The first route whose pattern matches and whose method is the
//! request's serves it; a path that matches only with other methods is a 405 naming them.

use std::future::Future;
use std::pin::Pin;

use hyper::header::{ALLOW, HeaderValue};
use hyper::{Method, StatusCode};

use super::request::Req;
use super::response::{self, Reply, Response};
use super::{agent, operator};
use crate::store::Registry;

/// A handler: an async function of the request.
pub type Handler<R> = fn(Req<R>) -> Pin<Box<dyn Future<Output = Reply> + Send>>;

pub struct Route<R: Registry> {
    pub method: Method,
    pub pattern: &'static str,
    pub handler: Handler<R>,
}

impl<R: Registry> std::fmt::Debug for Route<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.pattern)
    }
}

macro_rules! routes {
    ($($method:ident $pattern:literal => $handler:expr,)*) => {
        vec![$(Route {
            method: Method::$method,
            pattern: $pattern,
            handler: |req| Box::pin($handler(req)),
        },)*]
    };
}

/// The table. Literal segments win over parameters only by coming first.
pub fn table<R: Registry>() -> Vec<Route<R>> {
    routes! {
        GET "/healthz" => agent::healthz,
        GET "/readyz" => agent::readyz,
        GET "/api/v1/openapi.json" => agent::openapi,
        POST "/api/v1/register" => agent::register,
        POST "/api/v1/self-register" => agent::self_register,
        POST "/api/v1/attest/challenge" => agent::challenge,
        GET "/api/v1/attest/challenge" => agent::challenge,
        POST "/api/v1/attest" => agent::attest,
        GET "/api/v1/server-key" => agent::server_key,
        GET "/api/v1/config" => agent::pending_config,
        GET "/api/v1/config/{token}" => agent::config_by_token,
        POST "/api/v1/enroll" => agent::enroll,
        POST "/api/v1/link" => agent::link,
        GET "/api/v1/machines" => operator::list,
        POST "/api/v1/machines/import" => operator::import,
        GET "/api/v1/machines/{id}/offline-bundle" => operator::offline_bundle,
        GET "/api/v1/machines/{id}/approvals" => operator::approvals,
        GET "/api/v1/machines/{id}" => operator::get,
        DELETE "/api/v1/machines/{id}" => operator::delete,
        POST "/api/v1/machines/{id}/{action}" => operator::operate,
        GET "/api/v1/backup" => operator::backup,
        GET "/api/v1/whoami" => operator::whoami,
        GET "/api/v1/audit" => operator::audit_list,
        GET "/api/v1/audit/verify" => operator::audit_verify,
        GET "/api/v1/audit/checkpoints" => operator::audit_checkpoints,
        GET "/metrics" => operator::metrics,
    }
}

/// The parameters of `path` under `pattern`, if it matches.
pub fn matches(pattern: &str, path: &str) -> Option<Vec<String>> {
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    let mut params = Vec::new();
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                if g.is_empty() {
                    return None;
                }
                params.push(percent_decode(g)?);
            }
            (Some(w), Some(g)) if w == g => {}
            _ => return None,
        }
    }
}

/// A path segment with `%XX` escapes decoded; `None` when that is not UTF-8.
fn percent_decode(segment: &str) -> Option<String> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// No route for a request: `allow` names the methods the path has, if it has any.
#[derive(Debug)]
pub struct Miss {
    pub allow: Option<String>,
}

impl Miss {
    /// 404, or 405 with an `Allow` header.
    pub fn response(&self, method: &Method, path: &str) -> Response {
        let path = crate::log::escape(path);
        let Some(allow) = &self.allow else {
            return response::error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no such endpoint: {method} {path}"),
            );
        };
        let mut res = response::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{path} accepts {allow}"),
        );
        if let Ok(v) = HeaderValue::from_str(allow) {
            res.headers_mut().insert(ALLOW, v);
        }
        res
    }
}

/// Finds the route for `method` and `path`, with its parameters.
pub fn find<'t, R: Registry>(
    table: &'t [Route<R>],
    method: &Method,
    path: &str,
) -> Result<(&'t Route<R>, Vec<String>), Miss> {
    let mut allowed: Vec<&str> = Vec::new();
    for route in table {
        if let Some(params) = matches(route.pattern, path) {
            if route.method == *method {
                return Ok((route, params));
            }
            allowed.push(route.method.as_str());
        }
    }
    allowed.dedup();
    Err(Miss {
        allow: (!allowed.is_empty()).then(|| allowed.join(", ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_bind_one_segment_each() {
        assert_eq!(
            matches(
                "/api/v1/machines/{id}/{action}",
                "/api/v1/machines/m-1/lock"
            ),
            Some(vec!["m-1".into(), "lock".into()])
        );
        assert_eq!(matches("/api/v1/machines/{id}", "/api/v1/machines/"), None);
        assert_eq!(
            matches("/api/v1/machines/{id}", "/api/v1/machines/a/b"),
            None
        );
        assert_eq!(matches("/healthz", "/healthz/"), None);
        assert_eq!(
            matches("/api/v1/config/{token}", "/api/v1/config/a%20b"),
            Some(vec!["a b".into()])
        );
        assert_eq!(
            matches("/api/v1/config/{token}", "/api/v1/config/%ff"),
            None
        );
    }

    #[test]
    fn literal_routes_come_before_parameters_and_methods_are_named() {
        let table = table::<crate::store::redb::RedbRegistry>();
        let (route, params) = find(&table, &Method::POST, "/api/v1/machines/import").unwrap();
        assert_eq!(route.pattern, "/api/v1/machines/import");
        assert!(params.is_empty());
        let (route, _) = find(&table, &Method::POST, "/api/v1/machines/x/lock").unwrap();
        assert_eq!(route.pattern, "/api/v1/machines/{id}/{action}");
        let miss = find(&table, &Method::PUT, "/api/v1/machines/x").unwrap_err();
        let refused = miss.response(&Method::PUT, "/api/v1/machines/x");
        assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(refused.headers()[ALLOW], "GET, DELETE");
        let miss = find(&table, &Method::GET, "/nowhere").unwrap_err();
        assert_eq!(
            miss.response(&Method::GET, "/nowhere").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_openapi_document_and_the_table_name_the_same_endpoints() {
        let table = table::<crate::store::redb::RedbRegistry>();
        let doc = crate::openapi::document();
        let mut reached = vec![false; table.len()];
        for (path, methods) in doc["paths"].as_object().unwrap() {
            // A concrete path: each `{name}` replaced by a segment.
            let concrete: Vec<&str> = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "x" } else { seg })
                .collect();
            let concrete = concrete.join("/");
            for method in methods.as_object().unwrap().keys() {
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let (route, _) = find(&table, &m, &concrete)
                    .unwrap_or_else(|_| panic!("{method} {path} is documented but not routed"));
                let i = table.iter().position(|r| std::ptr::eq(r, route)).unwrap();
                reached[i] = true;
            }
        }
        for (route, reached) in table.iter().zip(reached) {
            assert!(reached, "{route:?} is routed but not documented");
        }
    }
}
