//! `noexport` (test plugin): a component missing the `on-message` export, so it does not
//! implement the `handler` world and the host must refuse to load it.

wit_bindgen::generate!({
    path: "../../wit",
    inline: "
        package sandport:noexport;

        world noexport {
            use sandport:plugin/types@0.1.0.{connection, response};

            export on-connect: func(conn: connection) -> result<response, string>;
            export on-disconnect: func(conn: connection);
        }
    ",
    world: "noexport",
    // Also generate the types this world takes from the `sandport:plugin` package.
    generate_all,
});

struct Noexport;

impl Guest for Noexport {
    fn on_connect(_conn: Connection) -> Result<Response, String> {
        Ok(Response { reply: None, close: false })
    }

    fn on_disconnect(_conn: Connection) {}
}

export!(Noexport);
