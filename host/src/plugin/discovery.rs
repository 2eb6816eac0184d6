//! Finding the plugin files to load: the `--plugin` values, each a path or a bare name looked up
//! in the plugins folder, or, without any, every `*.wasm` file of that folder.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// Turns `--plugin` values into existing files: a path that exists is used as is; a bare name
/// that does not is looked up in the plugins folder `dir`. No `--plugin` means the whole folder.
pub fn resolve(given: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>, Error> {
    if given.is_empty() {
        return plugins_in(dir);
    }
    given
        .iter()
        .map(|p| {
            if p.is_file() {
                return Ok(p.clone());
            }
            let in_dir = dir.join(p);
            if p.components().count() == 1 && in_dir.is_file() {
                return Ok(in_dir);
            }
            let looked = if p.components().count() == 1 {
                format!("{} or {}", p.display(), in_dir.display())
            } else {
                p.display().to_string()
            };
            Err(Error::config(format!(
                "plugin `{}` not found: there is no file {looked}",
                p.display()
            )))
        })
        .collect()
}

/// Every `*.wasm` file in `dir`, in name order (the chain's order).
fn plugins_in(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        Error::config(format!(
            "no --plugin given and the plugins folder {} cannot be read: {e}",
            dir.display()
        ))
    })?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| Error::config(format!("reading {}: {e}", dir.display())))?
            .path();
        if path.extension().is_some_and(|e| e == "wasm") && path.is_file() {
            found.push(path);
        }
    }
    if found.is_empty() {
        return Err(Error::config(format!(
            "no --plugin given and the plugins folder {} holds no *.wasm file",
            dir.display()
        )));
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A folder holding files named `names`, each with a Wasm header (not loadable: enough to be
    /// found); the same names give the same folder.
    pub(crate) fn temp_plugins(names: &[&str]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sandport-discovery-{}-{}",
            std::process::id(),
            names.join("-")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for n in names {
            std::fs::write(dir.join(n), b"\0asm").unwrap();
        }
        dir
    }

    #[test]
    fn folder_plugins_load_in_name_order_and_skip_other_files() {
        let dir = temp_plugins(&["b.wasm", "a.wasm", "notes.txt"]);
        let plugins = resolve(&[], &dir).unwrap();
        let names: Vec<_> = plugins.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(names, ["a.wasm", "b.wasm"]);
    }

    #[test]
    fn bare_names_are_looked_up_in_the_plugins_folder() {
        let dir = temp_plugins(&["echo.wasm"]);
        let plugins = resolve(&["echo.wasm".into()], &dir).unwrap();
        assert_eq!(plugins, [dir.join("echo.wasm")]);
    }

    #[test]
    fn a_missing_plugin_names_both_places_looked_in() {
        let dir = temp_plugins(&["x.wasm"]);
        let e = resolve(&["nope.wasm".into()], &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("plugin `nope.wasm` not found"), "{e}");
        assert!(
            e.contains(&dir.join("nope.wasm").display().to_string()),
            "{e}"
        );
    }
}
