//! `badimport` (test plugin): the `handler` world plus an import the host does not provide
//! (`sandport:extra/forbidden`), so the host must refuse to load it.

wit_bindgen::generate!({
    path: "../../wit",
    inline: "
        package sandport:extra;

        interface forbidden {
            escape: func() -> string;
        }

        world badimport {
            include sandport:plugin/handler@0.1.0;
            import forbidden;
        }
    ",
    world: "badimport",
    // Also generate the types this world takes from the `sandport:plugin` package.
    generate_all,
});

struct Badimport;

impl Guest for Badimport {
    fn on_connect(_conn: Connection) -> Result<Response, String> {
        Ok(Response { reply: None, close: false })
    }

    /// Calls the forbidden import, so that the component really imports it (unused imports are
    /// dropped when the component is made).
    fn on_message(_conn: Connection, _message: Vec<u8>) -> Result<Response, String> {
        let escaped = sandport::extra::forbidden::escape();
        Ok(Response { reply: Some(escaped.into_bytes()), close: false })
    }

    fn on_disconnect(_conn: Connection) {}
}

export!(Badimport);
