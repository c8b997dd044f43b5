//! The dashboard: a single page and its assets, embedded in the binary (uPlot comes from npm,
//! see `scripts/vendor-assets.sh`); nothing is loaded from elsewhere at run time.

use warp::http::StatusCode;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::error::ApiError;

/// (name, content type, bytes) of every asset under `/assets/`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/style.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/vendor/uPlot.min.css"),
    ),
];

const INDEX: &str = include_str!("../assets/index.html");

fn asset(name: &str) -> Option<Response> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, content_type, bytes)| {
            let reply = warp::reply::with_header(*bytes, "content-type", *content_type);
            warp::reply::with_header(reply, "cache-control", "no-cache").into_response()
        })
}

/// `GET /` and `GET /assets/{name}`.
pub fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let index = warp::path::end()
        .and(warp::get())
        .map(|| warp::reply::with_status(warp::reply::html(INDEX), StatusCode::OK).into_response());
    let assets =
        warp::path!("assets" / String)
            .and(warp::get())
            .and_then(|name: String| async move {
                asset(&name).ok_or_else(|| {
                    warp::reject::custom(ApiError::NotFound(format!(
                        "no asset {}",
                        crowdpulse_dataflow::error::excerpt(&name)
                    )))
                })
            });
    index.or(assets).unify()
}
