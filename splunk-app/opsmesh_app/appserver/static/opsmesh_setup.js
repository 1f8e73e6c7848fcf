/*
 * opsmesh setup page.
 *
 * Stores the signing secret in storage/passwords (realm "opsmesh", user name = the
 * credential name) through splunkd's REST API, writes the non-secret defaults of the
 * "Send to opsmesh" alert action (receiver URL, credential name, cluster, CA bundle) to
 * alert_actions.conf, and marks the app as configured. The secret never goes to a .conf
 * file and is never read back into the page.
 */
require([
    "jquery",
    "splunkjs/mvc",
    "splunkjs/mvc/simplexml/ready!"
], function ($, mvc) {
    "use strict";

    var REALM = "opsmesh";
    var ACTION = "opsmesh";
    var READ_ROLES = "admin,sc_admin,opsmesh_alert_sender";
    var WRITE_ROLES = "admin,sc_admin";
    var CREDENTIAL_RE = /^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$/;
    var CLUSTER_RE = /^[A-Za-z0-9][A-Za-z0-9_.\-]{0,252}$/;

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

    function credentialPath(name) {
        return "storage/passwords/" + encodeURIComponent(REALM + ":" + name + ":");
    }

    function isLoopback(host) {
        host = host.replace(/^\[|\]$/g, "").toLowerCase();
        return host === "localhost" || /\.localhost$/.test(host) || /^127\./.test(host) || host === "::1";
    }

    function validateUrl(value) {
        var a = document.createElement("a");
        if (!/^https?:\/\/[^\s]+$/i.test(value)) {
            return "The receiver URL must start with https://";
        }
        a.href = value;
        if (/@/.test(value.split("/")[2] || "")) {
            return "The receiver URL must not contain a user name or password; the secret goes in the secret field.";
        }
        if (/^http:/i.test(value) && !isLoopback(a.hostname)) {
            return "The receiver URL must use https (http is accepted only for localhost).";
        }
        return null;
    }

    function field(id, label, type, help) {
        var wrap = $("<div/>").addClass("opsmesh-field");
        $("<label/>").attr("for", id).text(label).appendTo(wrap);
        $("<input/>").attr({ id: id, type: type, autocomplete: "off", spellcheck: "false" }).appendTo(wrap);
        $("<div/>").addClass("opsmesh-help").text(help).appendTo(wrap);
        return wrap;
    }

    function status(kind, text) {
        var box = root.find(".opsmesh-status");
        box.removeClass("opsmesh-ok opsmesh-warn opsmesh-error").addClass("opsmesh-" + kind).text(text).show();
    }

    function render() {
        root.empty();
        $("<p/>").text(
            "Alerts that use the \"Send to opsmesh\" action are posted to the receiver below and signed " +
            "with the secret (HMAC-SHA256). Enter the same secret the opsmesh alert receiver is configured with."
        ).appendTo(root);
        field("opsmesh-url", "Receiver URL", "text",
            "For example https://opsmesh.example.com/v1/alerts/splunk. TLS is always verified.").appendTo(root);
        field("opsmesh-secret", "Signing secret", "password",
            "Stored encrypted in storage/passwords. Leave empty to keep the stored secret.").appendTo(root);
        field("opsmesh-secret2", "Signing secret (again)", "password", "").appendTo(root);
        field("opsmesh-credential", "Credential name", "text",
            "Name of the secret in storage/passwords (realm opsmesh). Alerts refer to it by this name.").appendTo(root);
        field("opsmesh-cluster", "Cluster", "text",
            "Cluster name sent with every alert unless the alert overrides it.").appendTo(root);
        field("opsmesh-ca", "CA bundle (optional)", "text",
            "PEM file on the search head that signs the receiver's certificate, if it is not publicly trusted.").appendTo(root);
        $("<div/>").addClass("opsmesh-status").hide().appendTo(root);
        $("<button/>").addClass("btn btn-primary").attr("id", "opsmesh-save").text("Save").appendTo(root);
        root.find("#opsmesh-credential").val("default");
        root.find("#opsmesh-cluster").val("default");
        root.find("#opsmesh-save").on("click", function (event) {
            event.preventDefault();
            save();
        });
    }

    function load() {
        call("GET", "configs/conf-alert_actions/" + ACTION).then(function (response) {
            var entry = response && response.data && response.data.entry && response.data.entry[0];
            var content = (entry && entry.content) || {};
            root.find("#opsmesh-url").val(content["param.receiver_url"] || "");
            root.find("#opsmesh-credential").val(content["param.credential"] || "default");
            root.find("#opsmesh-cluster").val(content["param.cluster"] || "default");
            root.find("#opsmesh-ca").val(content["param.ca_bundle"] || "");
            return call("GET", credentialPath(root.find("#opsmesh-credential").val()));
        }).then(function () {
            status("ok", "A secret is stored for this credential. Leave the secret fields empty to keep it.");
            root.data("has-secret", true);
        }, function (err) {
            root.data("has-secret", false);
            if (err && err.status && err.status !== 404) {
                status("warn", "Could not read the current settings (" + errorText(err) + ").");
            }
        });
    }

    function save() {
        var url = $.trim(root.find("#opsmesh-url").val());
        var secret = root.find("#opsmesh-secret").val();
        var secret2 = root.find("#opsmesh-secret2").val();
        var credential = $.trim(root.find("#opsmesh-credential").val()) || "default";
        var cluster = $.trim(root.find("#opsmesh-cluster").val()) || "default";
        var caBundle = $.trim(root.find("#opsmesh-ca").val());
        var problem = validateUrl(url);
        if (!problem && !CREDENTIAL_RE.test(credential)) {
            problem = "The credential name may use letters, digits, '.', '_' and '-' (at most 128).";
        }
        if (!problem && !CLUSTER_RE.test(cluster)) {
            problem = "The cluster name may use letters, digits, '.', '_' and '-'.";
        }
        if (!problem && secret !== secret2) {
            problem = "The two secrets differ.";
        }
        if (!problem && secret && secret.length < 16) {
            problem = "Use a secret of at least 16 characters.";
        }
        if (!problem && secret && secret !== $.trim(secret)) {
            problem = "The secret must not start or end with whitespace.";
        }
        if (problem) {
            status("error", problem);
            return;
        }
        var warnings = [];
        var button = root.find("#opsmesh-save").prop("disabled", true);
        status("warn", "Saving...");

        var storeSecret;
        if (secret) {
            storeSecret = call("POST", "storage/passwords", { name: credential, realm: REALM, password: secret })
                .catch(function (err) {
                    if (err && err.status === 409) {
                        return call("POST", credentialPath(credential), { password: secret });
                    }
                    throw err;
                });
        } else {
            storeSecret = call("GET", credentialPath(credential)).catch(function () {
                throw { status: 0, message: "No secret is stored for credential '" + credential + "': enter one." };
            });
        }

        storeSecret.then(function () {
            return call("POST", credentialPath(credential) + "/acl", {
                sharing: "app",
                owner: "nobody",
                "perms.read": READ_ROLES,
                "perms.write": WRITE_ROLES
            }).catch(function (err) {
                warnings.push("could not restrict who may read the secret (" + errorText(err) + ")");
            });
        }).then(function () {
            return call("POST", "configs/conf-alert_actions/" + ACTION, {
                "param.receiver_url": url,
                "param.credential": credential,
                "param.cluster": cluster,
                "param.ca_bundle": caBundle
            });
        }).then(function () {
            return call("POST", "/services/apps/local/" + encodeURIComponent(APP), { configured: "true" })
                .catch(function (err) {
                    warnings.push("could not mark the app as configured (" + errorText(err) + ")");
                });
        }).then(function () {
            root.find("#opsmesh-secret").val("");
            root.find("#opsmesh-secret2").val("");
            if (warnings.length) {
                status("warn", "Saved, but " + warnings.join("; ") + ".");
            } else {
                status("ok", "Saved. Give the owners of opsmesh alerts the role opsmesh_alert_sender, then enable the detections.");
            }
        }, function (err) {
            status("error", "Not saved: " + errorText(err));
        }).then(function () {
            button.prop("disabled", false);
        });
    }

    render();
    load();
});
