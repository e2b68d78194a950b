//! XEP-0004 data forms: a bridge's [`Form`] to `<x xmlns='jabber:x:data'>` and a submitted
//! form back to field values.

use ferry_bridge_api::{FieldKind, Form, FormValues};

use super::ns;
use crate::xml::Element;

/// A form of type `form` for the user to fill in.
pub fn to_element(form: &Form, form_type: Option<&str>) -> Element {
    let mut x = Element::new("x", ns::DATA).with_attr("type", "form");
    if !form.title.is_empty() {
        x.push(Element::text_child("title", ns::DATA, &form.title));
    }
    if !form.instructions.is_empty() {
        x.push(Element::text_child(
            "instructions",
            ns::DATA,
            &form.instructions,
        ));
    }
    if let Some(ft) = form_type {
        x.push(
            Element::new("field", ns::DATA)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(Element::text_child("value", ns::DATA, ft)),
        );
    }
    for f in &form.fields {
        let mut field = Element::new("field", ns::DATA)
            .with_attr("type", f.kind.as_str())
            .with_attr("var", &f.var);
        if !f.label.is_empty() {
            field.set_attr("label", &f.label);
        }
        if f.required {
            field.push(Element::new("required", ns::DATA));
        }
        if let Some(v) = &f.value {
            field.push(Element::text_child("value", ns::DATA, v));
        }
        if f.kind == FieldKind::ListSingle {
            for (label, value) in &f.options {
                field.push(
                    Element::new("option", ns::DATA)
                        .with_attr("label", label)
                        .with_child(Element::text_child("value", ns::DATA, value)),
                );
            }
        }
        x.push(field);
    }
    x
}

/// A result form (`type='result'`) with text fields, for command output.
pub fn result(title: &str, fields: &[(&str, &str, String)]) -> Element {
    let mut x = Element::new("x", ns::DATA)
        .with_attr("type", "result")
        .with_child(Element::text_child("title", ns::DATA, title));
    for (var, label, value) in fields {
        let mut field = Element::new("field", ns::DATA)
            .with_attr("var", *var)
            .with_attr("label", *label)
            .with_attr("type", "text-multi");
        for line in value.lines() {
            field.push(Element::text_child("value", ns::DATA, line));
        }
        x.push(field);
    }
    x
}

/// Reads the values of a submitted form (`type='submit'`); multi-valued fields are joined
/// with newlines. `None` when `x` is not a submission.
pub fn values(x: &Element) -> Option<FormValues> {
    if !x.is("x", ns::DATA) || x.attr("type") != Some("submit") {
        return None;
    }
    let mut out = FormValues::new();
    for field in x.elements().filter(|e| e.is("field", ns::DATA)) {
        let Some(var) = field.attr("var") else {
            continue;
        };
        if var == "FORM_TYPE" {
            continue;
        }
        let vals: Vec<String> = field
            .elements()
            .filter(|e| e.is("value", ns::DATA))
            .map(Element::text)
            .collect();
        out.insert(var.to_owned(), vals.join("\n"));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::parse_element;
    use ferry_bridge_api::FormField;

    #[test]
    fn form_serializes_fields_and_reads_back_a_submission() {
        let form = Form {
            title: "Register".into(),
            instructions: "Fill it".into(),
            fields: vec![
                FormField::text("email", "Email", true, Some("a@b".into())),
                FormField::private("password", "Password", true),
            ],
        };
        let x = to_element(&form, Some("jabber:iq:register"));
        let s = x.to_string();
        assert!(s.contains("<field type=\"text-single\" var=\"email\" label=\"Email\"><required/><value>a@b</value></field>"), "{s}");
        assert!(s.contains("var=\"FORM_TYPE\""), "{s}");

        let submitted = parse_element(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>jabber:iq:register</value></field><field var='email'><value>bob@example.com</value></field><field var='password'><value>s3cret</value></field></x>",
            "",
        )
        .expect("xml");
        let v = values(&submitted).expect("submission");
        assert_eq!(v.get("email").map(String::as_str), Some("bob@example.com"));
        assert_eq!(v.get("password").map(String::as_str), Some("s3cret"));
        assert!(!v.contains_key("FORM_TYPE"));
    }

    #[test]
    fn a_form_that_is_not_a_submission_gives_nothing() {
        let x = parse_element("<x xmlns='jabber:x:data' type='cancel'/>", "").expect("xml");
        assert!(values(&x).is_none());
    }
}
