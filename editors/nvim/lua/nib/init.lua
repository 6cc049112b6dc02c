--- nib for Neovim: starts `nib serve` per workspace through the built-in LSP client and shows
--- its suggestions as ghost text with `vim.lsp.inline_completion` (Neovim 0.12). A thin client:
--- every decision about what to suggest is the server's.
local M = {}

M.defaults = {
  -- The server command; `nib` must be on PATH, or give a full path.
  cmd = { 'nib', 'serve' },
  filetypes = {
    'rust', 'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact',
    'go', 'java', 'c', 'cpp', 'lua', 'sh', 'toml',
  },
  root_markers = { 'Cargo.toml', 'pyproject.toml', 'package.json', 'go.mod', '.git' },
  -- Sent as initializationOptions and on :NibSettings: see `nib serve`'s settings.
  settings = {},
  keymaps = {
    -- Accept the whole suggestion; falls back to the key itself when none is shown.
    accept = '<Tab>',
    -- Accept its first word / its first line only.
    accept_word = '<M-Right>',
    accept_line = '<M-Down>',
    -- Hide it (reported to the server as dismissed).
    dismiss = '<M-e>',
    -- Show the next / previous candidate.
    next = '<M-]>',
    prev = '<M-[>',
  },
}

--- The last `nib/status` the server sent: { state = 'loading'|'ready'|'error', message = ... }.
M.status = { state = 'starting', message = 'nib is starting' }

local function on_status(_, params)
  M.status = params
  if params.state == 'error' then
    vim.notify('nib: ' .. tostring(params.message), vim.log.levels.ERROR)
  end
  vim.api.nvim_exec_autocmds('User', { pattern = 'NibStatus', modeline = false })
end

local function map(lhs, fn, desc)
  if lhs and lhs ~= '' then
    vim.keymap.set('i', lhs, fn, { expr = true, replace_keycodes = true, desc = desc })
  end
end

local function report(command, args)
  local client = vim.lsp.get_clients({ name = 'nib', bufnr = 0 })[1]
  if client then
    client:request('workspace/executeCommand', { command = command, arguments = { args } }, function() end)
  end
end

--- Accepts the part of the shown suggestion that `cut` keeps (a word, a line), as typed text.
local function accept_part(cut)
  return vim.lsp.inline_completion.get({
    on_accept = function(item)
      local text = type(item.insert_text) == 'string' and item.insert_text or ''
      local part = cut(text)
      if part == '' then
        return
      end
      vim.api.nvim_paste(part, false, -1)
      report('nib.accept', { chars = vim.fn.strchars(part), partial = part ~= text })
    end,
  })
end

--- The first word of `text`, with the spaces and punctuation before it.
function M.first_word(text)
  return text:match('^[%s%p]*[%w_]*') or text
end

--- The first line of `text`, or the line break and the next line when it starts with one.
function M.first_line(text)
  local head, rest = text:match('^(\n?)(.*)$')
  return head .. (rest:match('^[^\n]*') or '')
end

function M.setup(opts)
  if not (vim.lsp and vim.lsp.config and vim.lsp.inline_completion) then
    vim.notify('nib needs Neovim 0.12 (vim.lsp.inline_completion)', vim.log.levels.ERROR)
    return
  end
  opts = vim.tbl_deep_extend('force', M.defaults, opts or {})
  M.options = opts

  vim.lsp.config('nib', {
    cmd = opts.cmd,
    filetypes = opts.filetypes,
    root_markers = opts.root_markers,
    init_options = opts.settings,
    settings = { nib = opts.settings },
    handlers = { ['nib/status'] = on_status },
    on_attach = function(client, bufnr)
      vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    end,
  })
  vim.lsp.enable('nib')

  local keys = opts.keymaps
  map(keys.accept, function()
    if not vim.lsp.inline_completion.get() then
      return keys.accept
    end
  end, 'nib: accept the suggestion')
  map(keys.accept_word, function()
    if not accept_part(M.first_word) then
      return keys.accept_word
    end
  end, 'nib: accept the next word of the suggestion')
  map(keys.accept_line, function()
    if not accept_part(M.first_line) then
      return keys.accept_line
    end
  end, 'nib: accept the next line of the suggestion')
  map(keys.dismiss, function()
    local ns = vim.api.nvim_create_namespace('nvim.lsp.inline_completion')
    if #vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, { limit = 1 }) == 0 then
      return keys.dismiss
    end
    vim.api.nvim_buf_clear_namespace(0, ns, 0, -1)
    report('nib.dismissed', {})
  end, 'nib: hide the suggestion')
  map(keys.next, function()
    vim.lsp.inline_completion.select({ count = 1 })
  end, 'nib: next suggestion')
  map(keys.prev, function()
    vim.lsp.inline_completion.select({ count = -1 })
  end, 'nib: previous suggestion')

  vim.api.nvim_create_user_command('NibStatus', function()
    print(('nib: %s (%s)'):format(M.status.state, M.status.message or ''))
  end, { desc = 'Show the state of the nib server' })
  vim.api.nvim_create_user_command('NibStats', function()
    local client = vim.lsp.get_clients({ name = 'nib' })[1]
    if not client then
      return vim.notify('nib is not running', vim.log.levels.WARN)
    end
    client:request('workspace/executeCommand', { command = 'nib.stats' }, function(err, result)
      if err then
        return vim.notify('nib: ' .. err.message, vim.log.levels.ERROR)
      end
      print(vim.inspect(result))
    end)
  end, { desc = 'Show local acceptance statistics' })
  vim.api.nvim_create_user_command('NibToggle', function()
    local on = vim.lsp.inline_completion.is_enabled()
    vim.lsp.inline_completion.enable(not on)
    print('nib suggestions ' .. (on and 'off' or 'on'))
  end, { desc = 'Turn nib suggestions on or off' })
end

return M
