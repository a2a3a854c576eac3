// funcsight for VS Code: starts `funcsight lsp` (the language server) over stdio for Python files.
// Everything shown (CodeLens, hover, diagnostics) comes from the server; this file only turns the
// settings into its command line and restarts it when they change.
import * as path from "path";
import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions } from "vscode-languageclient/node";

let client: LanguageClient | undefined;

export function serverArgs(config: vscode.WorkspaceConfiguration, folder: string | undefined): string[] {
  const args = ["lsp"];
  const store = config.get<string>("storePath", "").trim();
  const source = config.get<string>("source", "").trim();
  if (source) {
    args.push("--source", source);
  } else if (store) {
    args.push("--db", folder && !path.isAbsolute(store) ? path.join(folder, store) : store);
  }
  const baseline = config.get<string>("baselineVersion", "").trim();
  const candidate = config.get<string>("candidateVersion", "").trim();
  if (baseline) {
    args.push("--baseline", baseline);
  }
  if (candidate) {
    args.push("--candidate", candidate);
  }
  args.push("--poll", String(config.get<number>("pollSeconds", 2)));
  return args;
}

async function start(context: vscode.ExtensionContext): Promise<void> {
  const config = vscode.workspace.getConfiguration("funcsight");
  const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
  const serverOptions: ServerOptions = {
    command: config.get<string>("command", "funcsight"),
    args: serverArgs(config, folder),
    options: folder ? { cwd: folder } : undefined,
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [{ scheme: "file", language: "python" }],
    outputChannelName: "funcsight",
  };
  client = new LanguageClient("funcsight", "funcsight", serverOptions, clientOptions);
  await client.start();
}

async function stop(): Promise<void> {
  if (client) {
    const running = client;
    client = undefined;
    await running.stop();
  }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  context.subscriptions.push(
    vscode.commands.registerCommand("funcsight.restart", async () => {
      await stop();
      await start(context);
    }),
    vscode.commands.registerCommand("funcsight.showReport", async () => {
      if (client) {
        await client.sendRequest("workspace/executeCommand", { command: "funcsight.openReport", arguments: [] });
      }
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration("funcsight")) {
        await stop();
        await start(context);
      }
    }),
  );
  await start(context);
}

export function deactivate(): Promise<void> | undefined {
  return stop();
}
