// Shared by the lean.* extensions: UI strings from locales/<lang>/main.json ("lean" section), which the host
// serves at GET /i18n.  This module registers no extension of its own.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

let messages = null;
api.fetchApi("/i18n").then((r) => r.json()).then((d) => { messages = d; }).catch(() => { messages = {}; });

export function t(key, vars = {}, fallback = key) {
  let locale = "en";
  try {
    locale = app.extensionManager?.setting?.get?.("Comfy.Locale") || app.ui?.settings?.getSettingValue?.("Comfy.Locale") || "en";
  } catch {}
  const pick = (lang) => key.split(".").reduce((o, k) => (o == null ? o : o[k]), messages?.[lang]?.lean);
  let s = pick(locale) ?? pick(String(locale).split("-")[0]) ?? pick("en") ?? fallback;
  for (const [k, v] of Object.entries(vars)) s = s.split(`{${k}}`).join(String(v));
  return s;
}
