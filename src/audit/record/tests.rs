use super::*;

#[test]
fn hex32_is_lower_case_hex() {
    let counting: [u8; 32] = std::array::from_fn(|i| (i * 37 + 5) as u8);
    for bytes in [[0u8; 32], [0xff; 32], counting] {
        assert_eq!(hex32(&bytes), hex::encode(bytes));
    }
    assert_eq!(&hex32(&counting)[..6], "052a4f");
}

fn card_record() -> AuditRecord {
    let mut record = AuditRecord::new(
        AuditEvent::PaymentForwarded,
        "req-1",
        "web-eu",
        "192.0.2.7:5555",
        crate::outcome::Outcome::Forwarded,
    );
    record.order_id = Some("order-1".into());
    record.gateway = Some("card_connect".into());
    record.method = Some("purchase".into());
    record.card = Some(CardSummary {
        brand: "visa".into(),
        bin: "411111".into(),
        last4: "1111".into(),
        fingerprint: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843".into(),
    });
    record
}

fn keys(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                keys(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| keys(v, out)),
        _ => {}
    }
}

#[test]
fn record_json_has_no_card_number_or_cvv_field() {
    let key = Signer::new(b"k");
    let (line, _) = encode_line(&key, 1, "ts", &card_record(), GENESIS_PREV).unwrap();
    for json in [
        serde_json::to_value(card_record()).unwrap(),
        serde_json::from_slice(&line).unwrap(),
    ] {
        let mut names = Vec::new();
        keys(&json, &mut names);
        assert!(names.iter().any(|n| n == "fingerprint"), "{names:?}");
        for forbidden in [
            "number",
            "pan",
            "cvv",
            "cvc",
            "verification_value",
            "security_code",
        ] {
            assert!(!names.iter().any(|n| n == forbidden), "field {forbidden}");
        }
    }
    assert!(
        !String::from_utf8(line)
            .unwrap()
            .contains("4111111111111111")
    );
}

#[test]
fn line_has_fields_in_order_and_omits_none() {
    let key = Signer::new(b"k");
    let (line, mac) = encode_line(
        &key,
        7,
        "2024-01-02T03:04:05.000006Z",
        &card_record(),
        GENESIS_PREV,
    )
    .unwrap();
    let text = String::from_utf8(line.clone()).unwrap();
    assert!(text.starts_with("{\"seq\":7,\"ts\":\"2024-01-02T03:04:05.000006Z\",\"event\":\"payment.forwarded\",\"request_id\":\"req-1\""), "{text}");
    assert!(text.ends_with(&format!(
        ",\"prev\":\"{GENESIS_PREV}\",\"mac\":\"{mac}\"}}\n"
    )));
    let order = [
        "\"seq\":",
        "\"ts\":",
        "\"event\":",
        "\"request_id\":",
        "\"client_id\":",
        "\"remote_addr\":",
        "\"order_id\":",
        "\"gateway\":",
        "\"method\":",
        "\"card\":",
        "\"outcome\":",
        "\"key_id\":",
        "\"prev\":",
        "\"mac\":",
    ];
    let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(positions.is_sorted(), "{text}");
    for absent in [
        "transaction_id",
        "action",
        "reason",
        "upstream_status",
        "latency_ms",
    ] {
        assert!(!text.contains(absent), "{absent} in {text}");
    }
    assert_eq!(text.matches('\n').count(), 1);

    let checked = check_line(&key.hash, &line[..line.len() - 1]).unwrap();
    assert_eq!(
        checked,
        SignedLine {
            seq: 7,
            prev: GENESIS_PREV.into(),
            mac,
            key_id: Some(key.id),
            switches_to: None,
        }
    );
    assert_eq!(
        check_line(&KeyedHash::new(b"other"), &line[..line.len() - 1]),
        Err(LineError::BadMac)
    );
}

#[test]
fn newlines_in_fields_stay_escaped() {
    let key = Signer::new(b"k");
    let mut record = card_record();
    record.reason = Some("a\nb\r\"c\"".into());
    let (line, _) = encode_line(&key, 1, "ts", &record, GENESIS_PREV).unwrap();
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    assert!(check_line(&key.hash, &line[..line.len() - 1]).is_ok());
}

#[test]
fn uppercase_mac_is_malformed() {
    let key = Signer::new(b"k");
    let (line, mac) = encode_line(&key, 1, "ts", &card_record(), GENESIS_PREV).unwrap();
    let text = String::from_utf8(line).unwrap();
    let upper = text.replace(&mac, &mac.to_uppercase());
    assert_ne!(upper, text);
    assert!(matches!(
        check_line(&key.hash, upper.trim_end().as_bytes()),
        Err(LineError::Malformed(_))
    ));
}

#[test]
fn events_serialize_as_dotted_names() {
    for event in [
        AuditEvent::PaymentRejected,
        AuditEvent::PaymentForwarded,
        AuditEvent::PaymentCompleted,
        AuditEvent::TransactionRejected,
        AuditEvent::TransactionForwarded,
        AuditEvent::TransactionCompleted,
    ] {
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            format!("\"{event}\"")
        );
    }
}
