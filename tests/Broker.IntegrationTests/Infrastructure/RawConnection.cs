using System.Net.Sockets;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>A bare TCP connection to the broker, for bytes no HTTP/2 client would send.</summary>
public sealed class RawConnection : IAsyncDisposable
{
    /// <summary>The HTTP/2 client connection preface.</summary>
    public static readonly byte[] Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();

    /// <summary>An empty SETTINGS frame: length 0, type 4, no flags, stream 0.</summary>
    public static readonly byte[] EmptySettings = [0, 0, 0, 4, 0, 0, 0, 0, 0];

    private readonly TcpClient _tcp;

    private RawConnection(TcpClient tcp) => _tcp = tcp;

    public static async Task<RawConnection> OpenAsync(Uri address)
    {
        var tcp = new TcpClient();
        await tcp.ConnectAsync(address.Host, address.Port);
        return new RawConnection(tcp);
    }

    public async Task SendAsync(byte[] bytes) => await _tcp.GetStream().WriteAsync(bytes);

    /// <summary>Reads (and discards) whatever the broker sends until it closes the connection; false if it stays open past the deadline.</summary>
    public async Task<bool> ClosedByBrokerAsync()
    {
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        var buffer = new byte[4096];
        try
        {
            while (await _tcp.GetStream().ReadAsync(buffer, deadline.Token) > 0)
            {
            }
            return true;
        }
        catch (IOException)
        {
            return true; // reset by the broker
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    public ValueTask DisposeAsync()
    {
        _tcp.Dispose();
        return ValueTask.CompletedTask;
    }
}
