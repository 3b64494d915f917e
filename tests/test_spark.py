"""The session every job builds: Delta on, and the set-up's JVM class archive used where one exists."""

from __future__ import annotations

from customer_value import class_archive


def test_the_session_jvm_maps_the_class_archive_where_set_up_wrote_one(spark):
    """`make setup` writes the archive into the environment; every JVM a job starts then maps it (seconds off
    each start). Without one the JVM starts as usual, with no flag pointing at a missing file."""
    args = list(spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    flag = f"-XX:SharedArchiveFile={class_archive.archive_path()}"
    assert (flag in args) == class_archive.archive_path().is_file(), args
    if flag in args:
        bean = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
            spark.sparkContext._jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean"))
        assert bean.getVMOption("UseSharedSpaces").getValue() == "true"     # class sharing on in this JVM


def test_no_archive_means_no_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(class_archive, "archive_path", lambda: tmp_path / "missing.jsa")
    assert class_archive.java_options() == ""
    (tmp_path / "missing.jsa").write_bytes(b"x")
    assert class_archive.java_options() == f"-XX:SharedArchiveFile={tmp_path / 'missing.jsa'} -Xlog:cds*=off"


def test_session_conf_holds_only_inside_its_block(spark):
    from customer_value.spark import session_conf

    key, unset = "spark.sql.codegen.maxFields", "spark.customer_value.test.unset"
    before = spark.conf.get(key)
    with session_conf(spark, {key: "1234", unset: "x"}):
        assert spark.conf.get(key) == "1234" and spark.conf.get(unset) == "x"
    assert spark.conf.get(key) == before and spark.conf.get(unset, None) is None
    try:
        with session_conf(spark, {key: "99"}):
            raise RuntimeError("a failed job")
    except RuntimeError:
        pass
    assert spark.conf.get(key) == before
