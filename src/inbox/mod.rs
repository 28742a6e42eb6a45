//! The CSM inbox: a read model of every account (followed from the changelog and
//! alerts topics), the JSON API and the HTML pages that serve it, behind sign-in.

pub mod model;
pub mod pages;
