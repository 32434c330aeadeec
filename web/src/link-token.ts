import { ApiError } from './api.ts';

/**
 * Takes the token that a mail's link carries in its fragment (`#token=…`) and removes it from the address bar at
 * once, so that it stays out of the history, bookmarks and shared screenshots. Browsers never send a fragment to a
 * server, so this script is its only reader, and the POST that uses it is its only way out.
 */
export function takeLinkToken(): string | undefined {
  const tokenOf = () => new URLSearchParams(location.hash.slice(1)).get('token')?.trim();
  // A second link pasted into this tab changes only the fragment, which loads nothing: start again with its token.
  window.addEventListener('hashchange', () => {
    if (tokenOf() !== undefined) location.reload();
  });
  const token = tokenOf();
  if (location.hash !== '' || location.href.endsWith('#')) {
    history.replaceState(null, '', `${location.pathname}${location.search}`);
  }
  return token || undefined;
}

/** The refusals of a reset that ask for (another) second factor: the link is still good, and unspent. */
export function isSecondFactorRefusal(error: unknown): error is ApiError {
  return (
    error instanceof ApiError &&
    (error.code === 'second_factor_required' || error.code === 'invalid_second_factor')
  );
}

/** Whether the API refused the link's token itself (bad, used or expired), rather than the request. */
export function isRefusedLink(error: unknown): boolean {
  if (isSecondFactorRefusal(error)) return false;
  return error instanceof ApiError && (error.status === 400 || error.fields.has('token'));
}

/** Shows one of a page's views and hides the others; `focus` moves focus to its heading (`#view-title`). */
export function showView<View extends string>(views: readonly View[], view: View, focus: boolean): void {
  const loading = document.getElementById('loading');
  if (loading) loading.hidden = true;
  for (const name of views) {
    const section = document.getElementById(name);
    if (section) section.hidden = name !== view;
  }
  const title = document.getElementById(`${view}-title`);
  if (title?.textContent) document.title = `${title.textContent} · Gatehouse`;
  if (focus) title?.focus();
}
