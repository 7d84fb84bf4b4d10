//! Table tests of the name grammar: every name the reference launcher refuses is refused,
//! and so is everything it let through (`,` `:` `=` newline, `Startup`, long and non-ASCII
//! names, look-alike Unicode). Each refusal names its rule, and its message names the rule
//! and quotes the value.

use mount_plan::{JobName, Layout, LayoutSpec, NameError, MAX_NAME_LEN};

/// Assert `value` is refused by rule `rule`, with a message naming the rule and quoting the
/// value.
fn refused(value: &str, rule: &str) -> NameError {
    let err = JobName::parse(value).expect_err(value);
    assert_eq!(err.rule(), rule, "{value:?}: {err}");
    assert_eq!(err.value(), value, "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("`{rule}`")), "{message}");
    assert!(message.contains(&format!("{value:?}")), "{message}");
    // Bytes give the same verdict.
    assert_eq!(JobName::parse_bytes(value.as_bytes()), Err(err.clone()));
    err
}

#[test]
fn accepted_names() {
    for value in [
        "3f2c1a9e-8b4d-4e6f-9a7b-1c2d3e4f5a6b",
        "job_1",
        "train-2026.11",
        "job-1",
        "a",
        "Z",
        "0",
        "a..b",
        "x.y_z-0",
        "startupx",
        "local1",
        "Startup", // a JobName alone knows no reserved names; Layout::job does
    ] {
        let name = JobName::parse(value).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(name.as_str(), value);
        assert_eq!(name.to_string(), value);
        assert_eq!(value.parse::<JobName>().as_ref(), Ok(&name));
        assert_eq!(JobName::try_from(value.to_owned()).as_ref(), Ok(&name));
    }
    let longest = "a".repeat(MAX_NAME_LEN);
    assert_eq!(JobName::parse(&longest).unwrap().as_str(), longest);
}

#[test]
fn reference_launcher_refusals_are_refused() {
    // Empty, absolute, changed by normalisation, `.`/`..`, containing `/`.
    refused("", "empty");
    refused("/abs", "bad-first-char");
    refused("/", "bad-first-char");
    refused("a/", "bad-char");
    refused("a/.", "bad-char");
    refused("./a", "bad-first-char");
    refused("a//b", "bad-char");
    refused(".", "bad-first-char");
    refused("..", "bad-first-char");
    refused("a/b", "bad-char");
    refused("a/../b", "bad-char");
}

#[test]
fn option_syntax_characters_are_refused() {
    for (value, found, index) in [
        ("a,b", ',', 1),
        ("a:b", ':', 1),
        ("a=b", '=', 1),
        ("a\"b", '"', 1),
        ("a b", ' ', 1),
        ("a\nb", '\n', 1),
        ("a\tb", '\t', 1),
        ("a\\b", '\\', 1),
        ("job\0", '\0', 3),
        ("job1,source=/,readonly=false", ',', 4),
        ("a'b", '\'', 1),
        ("a;b", ';', 1),
        ("a$b", '$', 1),
        ("a*", '*', 1),
    ] {
        let err = refused(value, "bad-char");
        assert_eq!(
            err,
            NameError::BadChar {
                value: value.to_owned(),
                found,
                index
            }
        );
    }
    refused(",a", "bad-first-char");
    refused("\nb", "bad-first-char");
    refused("\0", "bad-first-char");
}

#[test]
fn first_and_last_characters() {
    for value in ["-rf", "_a", ".hidden", "~"] {
        refused(value, "bad-first-char");
    }
    for value in ["a.", "job-1.", "a.."] {
        refused(value, "trailing-dot");
    }
}

#[test]
fn long_names_are_refused() {
    let long = "a".repeat(300);
    let err = refused(&long, "too-long");
    assert_eq!(
        err,
        NameError::TooLong {
            value: long.clone(),
            len: 300
        }
    );
    refused(&"b".repeat(MAX_NAME_LEN + 1), "too-long");
    // Length is checked before content.
    refused(&",".repeat(MAX_NAME_LEN + 1), "too-long");
}

#[test]
fn non_ascii_and_look_alikes_are_refused() {
    for (value, found) in [
        ("j\u{43e}b", '\u{43e}'),        // Cyrillic o
        ("st\u{430}rtup", '\u{430}'),    // Cyrillic a
        ("job\u{ff11}", '\u{ff11}'),     // fullwidth 1
        ("caf\u{e9}", '\u{e9}'),         // precomposed e acute
        ("cafe\u{301}", '\u{301}'),      // combining acute
        ("startup\u{200b}", '\u{200b}'), // zero-width space
        ("a\u{2028}b", '\u{2028}'),      // line separator
        ("a\u{85}", '\u{85}'),           // next line
        ("a\u{7f}", '\u{7f}'),           // delete
    ] {
        let err = refused(value, "bad-char");
        assert!(
            matches!(err, NameError::BadChar { found: f, .. } if f == found),
            "{value:?}: {err:?}"
        );
    }
    for value in [
        "\u{430}",                  // Cyrillic a alone
        "\u{ff4a}\u{ff4f}\u{ff42}", // fullwidth "job"
        "\u{17f}tartup",            // long s
        "\u{212a}",                 // Kelvin sign
        "\u{1d5c}",
    ] {
        refused(value, "bad-first-char");
    }
}

#[test]
fn bytes_that_are_not_utf8_are_refused() {
    let err = JobName::parse_bytes(b"a\xffb").unwrap_err();
    assert_eq!(err.rule(), "bad-char");
    assert!(matches!(
        err,
        NameError::BadChar {
            found: '\u{fffd}',
            index: 1,
            ..
        }
    ));
    assert!(err.to_string().contains("`bad-char`"));
    assert!(err.to_string().contains(&format!("{:?}", "a\u{fffd}b")));
    let err = JobName::parse_bytes(b"\xc3").unwrap_err();
    assert_eq!(err.rule(), "bad-first-char");
    // A valid multi-byte character is reported whole.
    let err = JobName::parse_bytes("\u{430}".as_bytes()).unwrap_err();
    assert!(matches!(
        err,
        NameError::BadFirstChar {
            found: '\u{430}',
            ..
        }
    ));
}

#[test]
fn reserved_names_in_any_case() {
    let layout = Layout::default();
    for value in [
        "startup", "Startup", "STARTUP", "sTaRtUp", "local", "Local", "LOCAL",
    ] {
        let err = layout.job(value).expect_err(value);
        assert_eq!(err.rule(), "reserved", "{value:?}");
        let message = err.to_string();
        assert!(message.contains("`reserved`"), "{message}");
        assert!(message.contains(&format!("{value:?}")), "{message}");
        let shared = value.to_ascii_lowercase();
        assert_eq!(
            err,
            NameError::Reserved {
                value: value.to_owned(),
                reserved: shared.clone()
            }
        );
        assert!(message.contains(&format!("{shared:?}")), "{message}");
    }
    for value in [
        "startup1",
        "local-data",
        "startu",
        "3f2c1a9e-8b4d-4e6f-9a7b-1c2d3e4f5a6b",
    ] {
        assert_eq!(layout.job(value).unwrap().as_str(), value);
    }
    // Grammar first: `Startup,` is a bad character, not a reserved name.
    assert_eq!(layout.job("Startup,").unwrap_err().rule(), "bad-char");
}

#[test]
fn reserved_names_follow_the_layout() {
    let layout = LayoutSpec {
        shared: Some(vec!["certs".into(), "Models".into()]),
        ..LayoutSpec::default()
    }
    .build()
    .unwrap();
    assert_eq!(layout.job("CERTS").unwrap_err().rule(), "reserved");
    assert_eq!(layout.job("models").unwrap_err().rule(), "reserved");
    assert_eq!(layout.job("startup").unwrap().as_str(), "startup");
    let open = LayoutSpec {
        shared: Some(vec![]),
        ..LayoutSpec::default()
    }
    .build()
    .unwrap();
    assert_eq!(open.job("local").unwrap().as_str(), "local");
}

#[test]
fn check_not_reserved_directly() {
    let shared = [JobName::parse("startup").unwrap()];
    let job = JobName::parse("StartUp").unwrap();
    let err = job.check_not_reserved(&shared).unwrap_err();
    assert_eq!(err.rule(), "reserved");
    assert!(JobName::parse("job-1")
        .unwrap()
        .check_not_reserved(&shared)
        .is_ok());
}

#[cfg(feature = "serde")]
#[test]
fn serde_goes_through_the_parser() {
    let name: JobName = serde_json::from_str("\"job-1\"").unwrap();
    assert_eq!(name.as_str(), "job-1");
    assert_eq!(serde_json::to_string(&name).unwrap(), "\"job-1\"");
    for bad in ["\"a,b\"", "\"..\"", "\"\"", "\"j\u{43e}b\""] {
        let err = serde_json::from_str::<JobName>(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("name rule `"), "{bad}: {err}");
    }
}
