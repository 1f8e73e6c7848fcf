/*
 * opsmesh setup page.
 *
 * Reads and saves the site settings of the "Send to opsmesh" alert action through the app's
 * REST handler (bin/opsmesh_settings.py, opsmesh/settings), which validates every field on
 * save, stores the signing secret in storage/passwords (never in a .conf file) and never
 * returns it: the page only learns whether one is stored. "Send test alert" asks the handler
 * (opsmesh/test_alert) to deliver a signed test alert with the saved settings.
 */
require([
    "jquery",
    "splunkjs/mvc",
    "splunkjs/mvc/simplexml/ready!"
], function ($, mvc) {
    "use strict";

    var SECRET_MASK = "********";
    var FIELDS = ["receiver_url", "credential", "cluster", "timeout", "retry_budget", "proxy_url", "log_level",
        "ca_bundle"];

    var match = window.location.pathname.match(/\/app\/([^\/]+)\//);
    var APP = match ? decodeURIComponent(match[1]) : "opsmesh_app";
    var service = mvc.createService({ owner: "nobody", app: APP });
    var root = $("#opsmesh-setup");

    function call(method, path, params) {
        return new Promise(function (resolve, reject) {
            var query = $.extend({ output_mode: "json" }, params || {});
            var done = function (err, response) {
                if (err) {
                    reject(err);
                } else {
                    resolve(response);
                }
            };
            if (method === "GET") {
                service.get(path, query, done);
            } else {
                service.post(path, query, done);
            }
        });
    }

    function errorText(err) {
        if (!err) {
            return "unknown error";
        }
        var messages = err.data && err.data.messages;
        if (messages && messages.length && messages[0].text) {
            return "HTTP " + err.status + ": " + messages[0].text;
        }
        return err.status ? "HTTP " + err.status : String(err.error || err.message || err);
    }

    function field(name, label, type, help) {
        var wrap = $("<div/>").addClass("opsmesh-field");
        var id = "opsmesh-" + name;
        var input;
        $("<label/>").attr("for", id).text(label).appendTo(wrap);
        if (type === "textarea") {
            input = $("<textarea/>").attr({ rows: 6 });
        } else if ($.isArray(type)) {
            input = $("<select/>");
            $.each(type, function (_, option) {
                $("<option/>").attr("value", option).text(option).appendTo(input);
            });
        } else {
            input = $("<input/>").attr({ type: type });
        }
        input.attr({ id: id, name: name, autocomplete: "off", spellcheck: "false" }).appendTo(wrap);
        $("<div/>").addClass("opsmesh-help").text(help).appendTo(wrap);
        $("<div/>").addClass("opsmesh-field-error").hide().appendTo(wrap);
        return wrap;
    }

    function status(kind, text) {
        var box = root.find(".opsmesh-status");
        box.removeClass("opsmesh-ok opsmesh-warn opsmesh-error").addClass("opsmesh-" + kind).text(text).show();
    }

    function showFieldErrors(errors) {
        root.find(".opsmesh-field-error").hide().text("");
        $.each(errors || {}, function (name, message) {
            root.find("#opsmesh-" + name).closest(".opsmesh-field").find(".opsmesh-field-error").text(message).show();
        });
    }

    function render() {
        root.empty();
        $("<p/>").text(
            "Alerts that use the \"Send to opsmesh\" action are posted to the receiver below and signed " +
            "with the secret (HMAC-SHA256). Enter the same secret the opsmesh alert receiver is configured with."
        ).appendTo(root);
        field("receiver_url", "Receiver URL", "text",
            "For example https://opsmesh.example.com/v1/alerts/splunk. https only (http only for localhost); " +
            "TLS is always verified.").appendTo(root);
        field("secret", "Signing secret", "password",
            "16-1024 characters, stored encrypted in storage/passwords. Leave as is to keep the stored secret.")
            .appendTo(root);
        field("secret2", "Signing secret (again)", "password", "").appendTo(root);
        field("credential", "Credential name", "text",
            "Name of the secret in storage/passwords (realm opsmesh). Alerts refer to it by this name.").appendTo(root);
        field("cluster", "Cluster", "text",
            "Cluster name sent with every alert unless the alert overrides it.").appendTo(root);
        field("timeout", "Timeout per attempt (seconds)", "text", "1-60. Default 10.").appendTo(root);
        field("retry_budget", "Retry budget (seconds)", "text",
            "1-150: how long one alert may keep retrying. Default 120.").appendTo(root);
        field("proxy_url", "Proxy (optional)", "text",
            "http://proxy.example.com:3128 (no user name or password). Empty: splunkd's https_proxy applies.")
            .appendTo(root);
        field("log_level", "Log level", ["INFO", "DEBUG", "WARN", "ERROR"],
            "Lowest level of the action's lines in splunkd's log (sendmodalert).").appendTo(root);
        field("ca_bundle", "CA bundle (optional, PEM text)", "textarea",
            "Paste the PEM certificate(s) (-----BEGIN CERTIFICATE-----) of the CA that signs the receiver's " +
            "certificate, if it is not publicly trusted. File paths are not accepted (they do not work on Splunk Cloud).")
            .appendTo(root);
        $("<div/>").addClass("opsmesh-status").hide().appendTo(root);
        $("<button/>").addClass("btn btn-primary").attr("id", "opsmesh-save").text("Save").appendTo(root);
        $("<button/>").addClass("btn").attr("id", "opsmesh-test").text("Send test alert").appendTo(root);
        root.find("#opsmesh-save").on("click", function (event) {
            event.preventDefault();
            save();
        });
        root.find("#opsmesh-test").on("click", function (event) {
            event.preventDefault();
            sendTestAlert();
        });
    }

    function fill(payload) {
        $.each(FIELDS, function (_, name) {
            root.find("#opsmesh-" + name).val(payload.settings[name] || "");
        });
        root.find("#opsmesh-credential").val(payload.settings.credential || "default");
        root.find("#opsmesh-cluster").val(payload.settings.cluster || "default");
        root.find("#opsmesh-log_level").val(payload.settings.log_level || "INFO");
        root.find("#opsmesh-secret, #opsmesh-secret2").val(payload.secret_stored ? SECRET_MASK : "");
    }

    function load() {
        call("GET", "opsmesh/settings").then(function (response) {
            fill(response.data);
            if (response.data.secret_stored) {
                status("ok", "A secret is stored for this credential. Leave the secret fields as they are to keep it.");
            }
        }, function (err) {
            status("warn", "Could not read the current settings (" + errorText(err) + ").");
        });
    }

    function save() {
        var form = {};
        $.each(FIELDS, function (_, name) {
            form[name] = $.trim(root.find("#opsmesh-" + name).val() || "");
        });
        form.secret = root.find("#opsmesh-secret").val();
        showFieldErrors({});
        if (form.secret !== root.find("#opsmesh-secret2").val()) {
            showFieldErrors({ secret2: "The two secrets differ." });
            status("error", "Not saved: the two secrets differ.");
            return;
        }
        var button = root.find("#opsmesh-save").prop("disabled", true);
        status("warn", "Saving...");
        call("POST", "opsmesh/settings", form).then(function (response) {
            fill(response.data);
            status("ok", "Saved. Give the owners of opsmesh alerts the role opsmesh_alert_sender, then enable the detections.");
        }, function (err) {
            showFieldErrors(err && err.data && err.data.errors);
            status("error", "Not saved: " + ((err && err.data && err.data.error) || errorText(err)));
        }).then(function () {
            button.prop("disabled", false);
        });
    }

    function sendTestAlert() {
        var button = root.find("#opsmesh-test").prop("disabled", true);
        status("warn", "Sending a test alert with the saved settings...");
        call("POST", "opsmesh/test_alert", {}).then(function (response) {
            status("ok", "The receiver at " + response.data.receiver + " accepted the signed test alert.");
        }, function (err) {
            status("error", "Test alert failed: " + ((err && err.data && err.data.error) || errorText(err)));
        }).then(function () {
            button.prop("disabled", false);
        });
    }

    render();
    load();
});
