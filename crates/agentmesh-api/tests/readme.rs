//! The README's error tables list exactly the codes of [`ErrorCode`]: each once, none missing,
//! none invented.

use std::collections::BTreeSet;

use agentmesh_api::ErrorCode;

/// The backticked codes in the `code` column of every `| status | code | meaning |` table.
fn documented_codes(readme: &str) -> Vec<String> {
    let mut codes = Vec::new();
    let mut in_table = false;
    for line in readme.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() >= 3 && cells[0] == "status" && cells[1] == "code" {
            in_table = true;
            continue;
        }
        if !line.trim_start().starts_with('|') {
            in_table = false;
            continue;
        }
        if in_table && cells.len() >= 3 && !cells[1].starts_with("---") {
            codes.extend(cells[1].split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    codes
}

#[test]
fn the_readme_error_tables_list_every_code_once() {
    let readme = include_str!("../../../README.md");
    let documented = documented_codes(readme);
    let unique: BTreeSet<&str> = documented.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), documented.len(), "a code is listed twice: {documented:?}");
    let known: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let missing: Vec<&&str> = known.difference(&unique).collect();
    let invented: Vec<&&str> = unique.difference(&known).collect();
    assert!(missing.is_empty(), "codes missing from the README: {missing:?}");
    assert!(invented.is_empty(), "README codes that do not exist: {invented:?}");
}
