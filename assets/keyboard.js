// Undo / redo from the keyboard: Ctrl+Z (Cmd+Z) and Ctrl+Shift+Z (or Ctrl+Y).
// Typing in a text field keeps the browser's own undo.
document.addEventListener('keydown', function (event) {
    if (!(event.ctrlKey || event.metaKey)) { return; }
    const tag = (event.target && event.target.tagName || '').toLowerCase();
    if (tag === 'input' || tag === 'textarea' || (event.target && event.target.isContentEditable)) {
        return;
    }
    const key = event.key.toLowerCase();
    let id = null;
    if (key === 'z' && !event.shiftKey) { id = 'undo-button'; }
    else if ((key === 'z' && event.shiftKey) || key === 'y') { id = 'redo-button'; }
    if (!id) { return; }
    const button = document.getElementById(id);
    if (button && !button.disabled) {
        event.preventDefault();
        button.click();
    }
});
