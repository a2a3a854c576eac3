-- funcsight in Neovim's built-in LSP client (Neovim 0.7 or later, no plugin needed).
--
--   local funcsight = dofile("/path/to/funcsight/editors/neovim/funcsight.lua")
--   funcsight.setup({ db = "/path/to/funcsight.db" })       -- or source = "prometheus+http://host:9090"
--
-- Every Python buffer is attached to one `funcsight lsp` server: CodeLens lines above sensed
-- functions (refreshed on entering the buffer and after edits), `K` (vim.lsp.buf.hover) on a
-- function's `def` line, and warnings for regressions in the latest version diff.
local M = {}

function M.cmd(opts)
  local cmd = { opts.funcsight or "funcsight", "lsp" }
  for _, key in ipairs({ "db", "source", "baseline", "candidate", "poll" }) do
    if opts[key] then
      table.insert(cmd, "--" .. key)
      table.insert(cmd, tostring(opts[key]))
    end
  end
  return cmd
end

function M.setup(opts)
  opts = opts or {}
  local client_id = nil
  local function attach(bufnr)
    if client_id == nil or vim.lsp.get_client_by_id(client_id) == nil then
      client_id = vim.lsp.start_client({
        name = "funcsight",
        cmd = M.cmd(opts),
        root_dir = opts.root_dir or vim.fn.getcwd(),
        on_attach = function(_, buf)
          vim.keymap.set("n", "K", vim.lsp.buf.hover, { buffer = buf })
          vim.api.nvim_create_autocmd({ "BufEnter", "InsertLeave", "BufWritePost", "CursorHold" }, {
            buffer = buf,
            callback = function() vim.lsp.codelens.refresh() end,
          })
          vim.lsp.codelens.refresh()
        end,
      })
    end
    vim.lsp.buf_attach_client(bufnr, client_id)
  end
  vim.api.nvim_create_autocmd("FileType", {
    pattern = "python",
    callback = function(args) attach(args.buf) end,
  })
  return M
end

return M
