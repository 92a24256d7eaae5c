using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Broker.Perf.Peers;

/// <summary>
/// A peer's server as a child process on loopback: started with a fresh data folder, waited for until its port
/// accepts connections, its CPU time read from /proc (its own and its descendants', as RabbitMQ runs in a child), and
/// killed with its process tree at the end, its folder removed.
/// </summary>
internal sealed class ServerProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly string _dataDirectory;

    private ServerProcess(Process process, string dataDirectory, int port)
    {
        _process = process;
        _dataDirectory = dataDirectory;
        Port = port;
    }

    public int Port { get; }

    public static string NewDataDirectory(string system)
    {
        string directory = Path.Combine(Path.GetTempPath(), "broker-peers", $"{system}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(directory);
        return directory;
    }

    /// <summary>A port free on 127.0.0.1 now (the servers here take a port number, not port 0).</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public static async Task<ServerProcess> StartAsync(string file, IEnumerable<string> arguments, string dataDirectory, int port,
        IReadOnlyDictionary<string, string>? environment, TimeSpan startTimeout, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = dataDirectory,
        };
        foreach (string argument in arguments)
            start.ArgumentList.Add(argument);
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
            start.Environment[name] = value;
        var process = Process.Start(start) ?? throw new InvalidOperationException($"could not start {file}");
        var log = new System.Collections.Concurrent.ConcurrentQueue<string>();
        process.OutputDataReceived += (_, line) => { if (line.Data is not null) log.Enqueue(line.Data); };
        process.ErrorDataReceived += (_, line) => { if (line.Data is not null) log.Enqueue(line.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var server = new ServerProcess(process, dataDirectory, port);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(startTimeout);
        while (true)
        {
            if (process.HasExited)
            {
                int exitCode = process.ExitCode;
                await server.DisposeAsync();
                throw new InvalidOperationException($"{file} exited with {exitCode} before listening:\n{string.Join('\n', log.TakeLast(30))}");
            }
            try
            {
                using var probe = new TcpClient();
                await probe.ConnectAsync(IPAddress.Loopback, port, deadline.Token);
                return server;
            }
            catch (SocketException)
            {
                await Task.Delay(100, deadline.Token);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                await server.DisposeAsync();
                throw new TimeoutException($"{file} did not listen on {port} within {startTimeout}:\n{string.Join('\n', log.TakeLast(30))}");
            }
        }
    }

    /// <summary>User and system CPU of the process and every descendant alive now (RabbitMQ's beam runs under a script).</summary>
    public TimeSpan CpuTime() => Broker.Perf.ProcStat.CpuTimeOfTree(_process.Id);

    public async ValueTask DisposeAsync()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                await _process.WaitForExitAsync();
            }
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
        _process.Dispose();
        try
        {
            Directory.Delete(_dataDirectory, recursive: true);
        }
        catch (IOException)
        {
            // A file still held by a dying child; the temp folder is cleaned later.
        }
    }
}
