/*
 * winback push service worker (served at /push/sw.js).
 *
 * The store's pages register it with navigator.serviceWorker.register('/push/sw.js') and subscribe
 * with pushManager.subscribe({userVisibleOnly: true, applicationServerKey}). winback then sends each
 * push encrypted (RFC 8291); the browser decrypts it before this script sees it, so event.data is
 * the JSON winback wrote:
 *
 *   {"title": "...", "body": "...", "url": "https://shop.example/cart" | null, "message_id": 123}
 *
 * Every push must show a notification (userVisibleOnly), so a payload that cannot be read still
 * shows a plain one rather than nothing.
 */

'use strict';

// Take over at once after an update, instead of waiting for every tab of the shop to close.
self.addEventListener('install', function () {
  self.skipWaiting();
});

self.addEventListener('activate', function (event) {
  event.waitUntil(self.clients.claim());
});

/** The pushed JSON, or an empty object when there is none or it is not JSON. */
function readPayload(event) {
  if (!event.data) {
    return {};
  }
  try {
    var payload = event.data.json();
    return payload && typeof payload === 'object' ? payload : {};
  } catch (error) {
    return { body: event.data.text() };
  }
}

self.addEventListener('push', function (event) {
  var payload = readPayload(event);
  var title = typeof payload.title === 'string' && payload.title ? payload.title : 'New message';
  var options = {
    body: typeof payload.body === 'string' ? payload.body : '',
    // Kept with the notification for the click handler below.
    data: {
      url: typeof payload.url === 'string' ? payload.url : null,
      message_id: payload.message_id === undefined ? null : payload.message_id,
    },
  };
  // waitUntil keeps the worker alive until the notification is shown.
  event.waitUntil(self.registration.showNotification(title, options));
});

self.addEventListener('notificationclick', function (event) {
  event.notification.close();
  var data = event.notification.data || {};
  // A relative URL is resolved against the worker's origin (the shop).
  var target = new URL(data.url || '/', self.location.origin).href;

  event.waitUntil(
    self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then(function (windows) {
      // Prefer a tab already showing the page; otherwise a tab of the shop, sent to the page.
      for (var i = 0; i < windows.length; i++) {
        if (windows[i].url === target && 'focus' in windows[i]) {
          return windows[i].focus();
        }
      }
      for (var j = 0; j < windows.length; j++) {
        var client = windows[j];
        if (new URL(client.url).origin === new URL(target).origin && 'navigate' in client) {
          // navigate() only works on a tab this worker controls: open a new one if it refuses.
          return client
            .focus()
            .then(function (focused) {
              return (focused || client).navigate(target);
            })
            .catch(function () {
              return self.clients.openWindow(target);
            });
        }
      }
      if (self.clients.openWindow) {
        return self.clients.openWindow(target);
      }
      return undefined;
    })
  );
});
