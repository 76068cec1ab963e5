// A lost request is seen and retried (issue 11).
//
// A callback request (POST /_dash-update-component, or the fast path's POST /_pipex/...) that
// gets no answer (a worker killed, a connection reset: fetch rejects with a TypeError) or a
// proxy's 502 / 503 / 504 is sent once more after a short pause: callbacks are idempotent
// (same inputs, same cached result) and a move carries a sequence number with which the
// server drops a superseded one. If that fails too, the request is held (its caller keeps
// waiting, so the panel stays "updating…") and a banner at the top says the server did not
// answer, with Retry (re-sends the held requests) and Reload. The banner goes away, and held
// requests are re-sent, when a later request succeeds. A 4xx or a 500 is never re-sent
// (a 500 is a bug, not a lost request); a 500 shows the banner too. The start of a
// background callback (the Batch tab's run) launches a job: it is not re-sent by itself, and
// its banner ("… the job did not start") stays until that job is started again — other
// requests answering meanwhile (the Batch tab polls) do not take it away.
//
// dash-renderer and assets/fastmove.js call the global fetch when they send, so wrapping
// window.fetch here (assets load before dash-renderer starts) sees all their requests.
window.pipexRetry = (function () {
    'use strict';
    const original = window.fetch;
    const PAUSE_MS = 500;
    const LOST = [502, 503, 504];
    const held = [];          // {url, init, resolve, reject}: failed twice, waiting
    const background = {};    // outputs of background callbacks (from _dash-dependencies)
    let banner = null;
    let again = 0;            // requests sent once more after a loss (read by tests)
    let jobLost = false;      // a background job's start got no answer: the banner stays

    function urlOf(input) {  // a Request object passes through (never sent so by the page)
        return typeof input === 'string' ? input : String((input && input.url) || input || '');
    }

    function watched(url, init) {
        const method = String((init && init.method) || 'GET').toUpperCase();
        const body = init && init.body;
        return method === 'POST' && (body == null || typeof body === 'string') &&
            (url.indexOf('_dash-update-component') >= 0 || url.indexOf('/_pipex/') >= 0);
    }

    function startsJob(url, init) {
        if (url.indexOf('_dash-update-component') < 0 || /[?&](cacheKey|job)=/.test(url)) {
            return false;
        }
        try {
            return Boolean(background[JSON.parse(init.body).output]);
        } catch (e) { return false; }
    }

    // One attempt: {res} for an answer, {lost} for none (network error, 502 / 503 / 504).
    function attempt(url, init) {
        return original.call(window, url, init).then(function (res) {
            return LOST.indexOf(res.status) >= 0 ? {lost: res} : {res: res};
        }, function (err) {
            if (err && err.name === 'AbortError') { throw err; }  // the page cancelled it
            return {lost: err};
        });
    }

    function answered(res) {
        if (res.status >= 500) { show(false); } else if (res.status < 400) { recovered(); }
        return res;
    }

    function hold(url, init) {
        return new Promise(function (resolve, reject) {
            held.push({url: url, init: init, resolve: resolve, reject: reject});
            show(true);
        });
    }

    // Re-send every held request (Retry, or the server answered again).
    function resend() {
        held.splice(0).forEach(function (h) {
            attempt(h.url, h.init).then(function (a) {
                if (a.res) { h.resolve(answered(a.res)); return; }
                held.push(h);
                show(true);
            }, h.reject);
        });
    }

    function recovered() {
        if (held.length) { resend(); } else if (!jobLost) { hide(); }
    }

    function show(lost) {
        if (!document.body) { return; }
        if (!banner) {
            banner = document.createElement('div');
            banner.id = 'pipex-lost';
            banner.className = 'pipex-lost';
            banner.setAttribute('role', 'alert');
            const text = document.createElement('span');
            const retry = document.createElement('button');
            const reload = document.createElement('button');
            retry.type = reload.type = 'button';
            retry.className = 'pipex-lost-retry';
            retry.textContent = 'Retry';
            reload.textContent = 'Reload';
            retry.addEventListener('click', resend);
            reload.addEventListener('click', function () { window.location.reload(); });
            banner.append(text, retry, reload);
            document.body.appendChild(banner);
        }
        banner.firstChild.textContent = jobLost ?
            'The server did not answer: the job did not start. Start it again.' : lost ?
            'The server did not answer: the panels may be stale.' :
            'The server failed on a request (an error, in its log): the panels may be stale.';
        banner.querySelector('.pipex-lost-retry').hidden = !held.length;
        banner.hidden = false;
    }

    function hide() { if (banner) { banner.hidden = true; } }

    function deps(res) {  // note the background callbacks (their start is not re-sent)
        res.clone().json().then(function (list) {
            (list || []).forEach(function (cb) {
                if (cb.background) { background[cb.output] = true; }
            });
        }).catch(function () {});
        return res;
    }

    window.fetch = function (input, init) {
        const url = urlOf(input);
        if (url.indexOf('_dash-dependencies') >= 0) {
            return original.apply(window, arguments).then(deps);
        }
        if (!watched(url, init)) { return original.apply(window, arguments); }
        const job = startsJob(url, init);
        if (job) { jobLost = false; }  // started again: its answer decides
        return attempt(url, init).then(function (first) {
            if (first.res) { return answered(first.res); }
            if (job) {
                jobLost = true;
                show(true);
                if (first.lost instanceof Response) { return first.lost; }
                throw first.lost;
            }
            return new Promise(function (r) { setTimeout(r, PAUSE_MS); }).then(function () {
                again += 1;
                return attempt(url, init);
            }).then(function (second) {
                return second.res ? answered(second.res) : hold(url, init);
            });
        });
    };

    return {held: function () { return held.length; }, again: function () { return again; },
            retry: resend};
})();
