using System.Text;
using Broker.Storage.Files;

namespace Broker.Storage.Tests;

/// <summary>DurableFile: whole replacement, and owner-only files even over a temporary file a crash left behind.</summary>
public sealed class DurableFileTests : IDisposable
{
    private readonly string _folder = Path.Combine(Path.GetTempPath(), "durable-file-tests", Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_folder))
            Directory.Delete(_folder, recursive: true);
    }

    [Fact]
    public void A_replacement_holds_the_new_content_whole_and_leaves_no_temporary_file()
    {
        string path = Path.Combine(_folder, "nested", "meta.json");
        DurableFile.Replace(path, stream => stream.Write("old"u8));
        DurableFile.Replace(path, stream => stream.Write("new content"u8));
        Assert.Equal("new content", File.ReadAllText(path, Encoding.UTF8));
        Assert.Equal(["meta.json"], Directory.GetFiles(Path.GetDirectoryName(path)!).Select(Path.GetFileName));
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public void An_owner_only_file_stays_owner_only_when_a_crash_left_a_readable_temporary_file()
    {
        Directory.CreateDirectory(_folder);
        string path = Path.Combine(_folder, "keys.json");
        // As a crash mid-write of an older version (or another tool) could leave it: readable by everyone.
        File.WriteAllText(path + ".tmp", "stale");
        File.SetUnixFileMode(path + ".tmp", UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);

        DurableFile.Replace(path, stream => stream.Write("secret"u8), ownerOnly: true);

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        Assert.Equal("secret", File.ReadAllText(path));
        Assert.False(File.Exists(path + ".tmp"));
    }
}
