//! `POST /join-tokens`: a join token scoped to one region and short-lived,
//! like `kubeadm token create`. A Terraform run's token may mint them for
//! its own node pool's region only (the provider hands them to the agents
//! it starts), so the daemon's join token never enters Terraform's
//! environment; an admin may mint them for any declared region.
//!
//! This module owns the request and its checks; `auth::Grants` keeps the
//! tokens.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::common::{Caller, require_writer};
use crate::app::App;
use crate::auth::JOIN_TOKEN_LIFETIME;
use crate::error::{ApiError, JsonBody};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintJoin {
    pub region: String,
    /// Seconds; default and maximum 600.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct MintedJoin {
    pub token: String,
    pub region: String,
    pub expires_in_seconds: u64,
}

pub async fn mint_join(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<MintJoin>,
) -> Result<(StatusCode, Json<MintedJoin>), ApiError> {
    let caller = require_writer(&app, &headers, Some(&request.region))?;
    if !app.read_world().decl.regions.contains_key(&request.region) {
        return Err(ApiError::not_found(
            "unknown_region",
            format!(
                "region: `{}` is not declared in platform-config",
                request.region
            ),
        ));
    }
    let ttl = request
        .ttl_seconds
        .map_or(JOIN_TOKEN_LIFETIME, Duration::from_secs)
        .min(JOIN_TOKEN_LIFETIME);
    let parent = match &caller {
        Caller::Run(scope) => Some(scope.grant),
        _ => None,
    };
    let token = app
        .grants
        .mint_join(parent, &request.region, ttl)
        .ok_or_else(|| ApiError::unauthorized("the run's token has ended"))?;
    Ok((
        StatusCode::CREATED,
        Json(MintedJoin {
            token,
            region: request.region,
            expires_in_seconds: ttl.as_secs(),
        }),
    ))
}
