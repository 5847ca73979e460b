(function () {
'use strict';
const D = JSON.parse(document.getElementById('mb-data').textContent);
const STORE = 'microbleeds-review:' + D.sha256;
const cards = Array.from(document.querySelectorAll('.card'));
const byId = {};
D.candidates.forEach(function (c) { byId[String(c.id)] = c; });
const $ = function (id) { return document.getElementById(id); };
const reviewer = $('reviewer'), filter = $('filter'), advance = $('advance');
let state = load();
let cur = -1;

function load() {
  let s = null;
  try { s = JSON.parse(localStorage.getItem(STORE) || 'null'); } catch (e) { s = null; }
  if (!s || typeof s !== 'object' || typeof s.decisions !== 'object' || !s.decisions) {
    s = {reviewer: '', decisions: {}};
  }
  if (Object.keys(s.decisions).length === 0 && D.prior && Object.keys(D.prior).length) {
    s.decisions = JSON.parse(JSON.stringify(D.prior));
    if (!s.reviewer) {
      const names = Object.values(D.prior).map(function (d) { return d.reviewer; }).filter(Boolean);
      s.reviewer = names[0] || '';
    }
  }
  return s;
}
function persist() {
  try { localStorage.setItem(STORE, JSON.stringify(state)); } catch (e) { /* private mode */ }
}
function msg(text) { $('msg').textContent = text; }
function render(card) {
  const d = state.decisions[card.dataset.cid];
  card.classList.remove('d-confirmed', 'd-rejected');
  const el = card.querySelector('[data-role=dec]');
  if (!d) { el.textContent = 'undecided'; return; }
  card.classList.add('d-' + d.decision);
  el.textContent = d.decision + (d.mimic_type ? ' (' + d.mimic_type + ')' : '');
}
function burden(n) { return n <= 0 ? '0' : n === 1 ? '1' : n <= 4 ? '2-4' : '>=5'; }
function progress() {
  const ids = Object.keys(byId);
  let decided = 0, confirmed = 0, accUndecided = 0;
  ids.forEach(function (id) {
    const d = state.decisions[id];
    if (d) { decided++; if (d.decision === 'confirmed') confirmed++; }
    else if (byId[id].lesion_id > 0) accUndecided++;
  });
  $('progress').textContent = decided + '/' + ids.length + ' decided · ' + confirmed +
    ' confirmed (burden ' + burden(confirmed) + ')' +
    (accUndecided ? ' · ' + accUndecided + ' accepted lesion(s) undecided' : '');
}
function visible() { return cards.filter(function (c) { return c.style.display !== 'none'; }); }
function focusCard(card, scroll) {
  if (!card) return;
  if (cur >= 0 && cards[cur]) cards[cur].classList.remove('current');
  cur = cards.indexOf(card);
  card.classList.add('current');
  if (scroll !== false) card.scrollIntoView({block: 'center'});
}
function move(step) {
  const vis = visible();
  if (!vis.length) return;
  let i = vis.indexOf(cards[cur]);
  if (i < 0) i = step > 0 ? 0 : vis.length - 1;
  else i = Math.min(vis.length - 1, Math.max(0, i + step));
  focusCard(vis[i]);
}
function nextUndecided() {
  const vis = visible();
  const start = Math.max(0, vis.indexOf(cards[cur]));
  for (let n = 1; n <= vis.length; n++) {
    const c = vis[(start + n) % vis.length];
    if (!state.decisions[c.dataset.cid]) { focusCard(c); return; }
  }
  msg('every shown candidate has a decision');
}
function decide(card, key) {
  if (!card) { msg('select a card first (j / → or click)'); return; }
  const cid = card.dataset.cid;
  if (key === 'u') { delete state.decisions[cid]; }
  else {
    const a = D.keys[key];
    state.decisions[cid] = {decision: a[0], mimic_type: a[1],
      reviewer: state.reviewer, time: new Date().toISOString()};
  }
  persist(); render(card); progress(); msg('');
  if (key !== 'u' && advance.checked) {
    if (filter.value === 'undecided') { applyFilter(); nextUndecided(); } else move(1);
  }
}
function clean(s) { return String(s == null ? '' : s).replace(/[\t\r\n]+/g, ' ').trim(); }
function tsv() {
  const head = ['sha256', 'candidate_id', 'lesion_id', 'decision', 'mimic_type', 'reviewer',
                'time', 'x_mm', 'y_mm', 'z_mm'];
  const lines = [head.join('\t')];
  Object.keys(state.decisions).map(Number).sort(function (a, b) { return a - b; })
    .forEach(function (id) {
      const d = state.decisions[String(id)], c = byId[String(id)];
      if (!c) return;
      lines.push([D.sha256, id, c.lesion_id, d.decision, d.mimic_type || '',
        clean(d.reviewer || state.reviewer), d.time, c.x, c.y, c.z].map(clean).join('\t'));
    });
  return lines.join('\n') + '\n';
}
function save() {
  if (!clean(state.reviewer)) { msg('enter your name as reviewer before saving'); reviewer.focus(); return; }
  Object.keys(state.decisions).forEach(function (id) {
    if (!state.decisions[id].reviewer) state.decisions[id].reviewer = clean(state.reviewer);
  });
  persist();
  const blob = new Blob([tsv()], {type: 'text/tab-separated-values'});
  const link = $('dl');
  if (link.dataset.url) URL.revokeObjectURL(link.dataset.url);
  const url = URL.createObjectURL(blob);
  link.href = url; link.dataset.url = url; link.download = D.decisions_file;
  link.click();
  msg('saved ' + Object.keys(state.decisions).length + ' decision(s) to ' + D.decisions_file);
}
function applyFilter() {
  const f = filter.value;
  cards.forEach(function (c) {
    const d = state.decisions[c.dataset.cid];
    const show = f === 'all' || f === c.dataset.status || (f === 'undecided' && !d);
    c.style.display = show ? '' : 'none';
  });
}
function loadTsv(text) {
  const lines = text.split(/\r?\n/).filter(function (l) { return l.trim() !== ''; });
  if (!lines.length) { msg('empty file'); return; }
  const head = lines[0].split('\t').map(function (h) { return h.trim(); });
  const col = function (n) { return head.indexOf(n); };
  if (col('sha256') < 0 || col('candidate_id') < 0 || col('decision') < 0) {
    msg('not a decisions file (needs sha256, candidate_id, decision)'); return;
  }
  const got = {};
  for (let i = 1; i < lines.length; i++) {
    const f = lines[i].split('\t');
    if ((f[col('sha256')] || '').toLowerCase() !== D.sha256.toLowerCase()) {
      msg('refused: line ' + (i + 1) + ' is for another scan (checksum differs)'); return;
    }
    const id = String(parseInt(f[col('candidate_id')], 10));
    if (!byId[id]) { msg('refused: unknown candidate ' + f[col('candidate_id')]); return; }
    const dec = (f[col('decision')] || '').trim();
    if (dec !== 'confirmed' && dec !== 'rejected') continue;
    got[id] = {decision: dec, mimic_type: col('mimic_type') >= 0 ? (f[col('mimic_type')] || '') : '',
      reviewer: col('reviewer') >= 0 ? clean(f[col('reviewer')]) : '',
      time: col('time') >= 0 ? (f[col('time')] || '') : ''};
  }
  state.decisions = got;
  const names = Object.values(got).map(function (d) { return d.reviewer; }).filter(Boolean);
  if (!state.reviewer && names.length) { state.reviewer = names[0]; reviewer.value = names[0]; }
  persist(); cards.forEach(render); applyFilter(); progress();
  msg('loaded ' + Object.keys(got).length + ' decision(s)');
}
$('load').addEventListener('change', function () {
  const file = this.files && this.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = function () { loadTsv(String(reader.result)); };
  reader.readAsText(file);
  this.blur();
});
reviewer.value = state.reviewer || '';
reviewer.addEventListener('input', function () { state.reviewer = clean(reviewer.value); persist(); });
filter.addEventListener('change', function () { applyFilter(); filter.blur(); });
$('save').addEventListener('click', save);
$('dl').addEventListener('click', function (e) {
  if (e.isTrusted) { e.preventDefault(); save(); }  // a reader's click: save the current state
});
cards.forEach(function (card) {
  render(card);
  card.addEventListener('click', function (e) {
    const b = e.target.closest('button[data-key]');
    focusCard(card, false);
    if (b) decide(card, b.dataset.key);
  });
});
document.querySelectorAll('.ovsvg a.mk').forEach(function (a) {
  a.addEventListener('click', function (e) {
    e.preventDefault();
    const c = $('c' + a.dataset.cid);
    if (c) { if (c.style.display === 'none') { filter.value = 'all'; applyFilter(); } focusCard(c); }
  });
});
document.addEventListener('keydown', function (e) {
  const t = e.target;
  if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) {
    if (e.key === 'Escape' || e.key === 'Enter') t.blur();
    return;
  }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (Object.prototype.hasOwnProperty.call(D.keys, k) || k === 'u') {
    decide(cards[cur], k);
  } else if (k === 'j' || k === 'ArrowRight') { move(1); }
  else if (k === 'k' || k === 'ArrowLeft') { move(-1); }
  else if (k === 'n') { nextUndecided(); }
  else if (k === 'm') { document.body.classList.toggle('nomark'); }
  else if (k === 's') { save(); }
  else if (k === '?' || k === 'h') { $('legend').classList.toggle('hide'); }
  else return;
  e.preventDefault();
});
progress();
window.microbleedsReview = {state: function () { return state; }, tsv: tsv, save: save};
})();
