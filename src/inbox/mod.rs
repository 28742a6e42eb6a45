//! The CSM inbox: a read model of every account (followed from the changelog and
//! alerts topics, or fed by a replay), the JSON API and the HTML pages that serve it,
//! behind sign-in.

pub mod api;
pub mod model;
pub mod pages;
pub mod view;
